"""KFP components: one folder per stage, each a thin adapter over one `mangadistill.stages` call."""
