"""The intent pipeline's components: teacher ensemble votes -> soft labels -> student -> int8 -> promotion gate, which
reads the generated eval split and the hand-written set (intent_handwritten_eval) side by side."""
