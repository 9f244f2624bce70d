"""What every task wing shares: storage, contracts, training-loop pieces, ONNX int8, models, the chat client and
teacher server, gates, events, the report, benchmarking, the catalog and retrieval. Imports no wing."""
