"""Reranker wing: a cross-encoder teacher distilled into a small cross-encoder (α·supervised + (1−α)·MSE to the
teacher), quantized to int8 for CPU, gated on NDCG@10 retained, BM25 and latency."""
