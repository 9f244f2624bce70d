"""Response wing: a managed LLM teacher behind an OpenAI-compatible API distilled into a small causal LM (LoRA),
quantized with bitsandbytes, gated on judge preference, human review, hallucination rate, cost and slices."""
