"""MangaAssist Distill: the runtime library behind the KFP components (no kfp import here)."""

__version__ = "0.1.0"
