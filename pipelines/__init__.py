"""Compiled KFP pipelines (one module per scenario) and the `mangadistill` command line."""
