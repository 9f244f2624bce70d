"""Intent wing: an ensemble teacher (classifier + escalation rules + LLM adjudicator) distilled into a small
classifier on soft labels, quantized to int8 for CPU/mobile, gated on accuracy, rare-intent recall and latency."""
