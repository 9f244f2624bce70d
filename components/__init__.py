"""KFP components: one folder per task and stage (components/<task>/<stage>/), each a thin adapter over one call
in `mangadistill.<task>.stages`; the tasks share the stage images named in `images.py`."""
