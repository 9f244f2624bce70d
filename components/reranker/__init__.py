"""The reranker's components: a cross-encoder teacher distilled into a small cross-encoder for CPU serving."""
