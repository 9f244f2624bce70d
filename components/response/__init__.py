"""The response task's components: a retrieval-grounded teacher LLM distilled into a small self-hosted LM."""
