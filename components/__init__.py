"""KFP components: one folder per stage, each a thin adapter over one `mangadistill.intent.stages` call."""
