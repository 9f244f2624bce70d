"""Intent pipeline targets, measured as ratios in one run on this machine.

Runs `mangadistill run intent` with caching off (after making sure the sample data and the demo teacher
exist, which is first-time set-up and not timed), then reads the gate's event and prints each target
against its measured value. Writes bench/results/intent.json and a Markdown table for the README.

    make bench            # or: .venv/bin/python bench/intent_bench.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_support import machine_facts, passes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# (label, metric, op, target, anchor from elsewhere)
TARGETS = [
    ("student accuracy / teacher-ensemble accuracy", "accuracy_retained", ">=", 0.98,
     "DistilBERT kept 97% of BERT-base on GLUE"),
    ("rare-intent recall, student − hard-label baseline (min)", "rare_recall_vs_baseline_min", ">=", 0.0, ""),
    ("CPU speed-up, teacher classifier / student (fp32, batch 1)", "latency_speedup_p50", ">=", 10.0,
     "DistilBERT 1.6×; a voice-assistant intent student 18× at parity"),
    ("CPU speed-up, teacher classifier / int8 student (batch 1)", "int8_latency_speedup_p50", ">=", 10.0, ""),
    ("int8 size ratio (fp32 ONNX / int8 ONNX)", "int8_size_ratio", ">=", 3.5, ""),
    ("int8 accuracy loss (points of accuracy)", "int8_accuracy_drop", "<=", 0.01, ""),
]



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / ".mangadistill"))
    parser.add_argument("--output-dir", default=str(ROOT / "mangadistill-output" / "bench-intent"))
    args = parser.parse_args()
    cli = [str(Path(sys.executable).with_name("mangadistill"))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not (Path(args.workdir) / "teachers/intent/config.json").exists():
        subprocess.run([*cli, "bootstrap-teacher", "--workdir", args.workdir], check=True, env=env)
    started = time.perf_counter()
    subprocess.run([*cli, "run", "intent", "--workdir", args.workdir, "--output-dir", args.output_dir,
                    "--no-cache"], check=True, env=env)
    wall = time.perf_counter() - started
    event = json.loads((Path(args.output_dir) / "distilled_model_eval.json").read_text())

    rows = [(label, metric, op, target, event.get(metric), anchor) for label, metric, op, target, anchor in TARGETS]
    rows.append(("`mangadistill run intent` wall time, seconds", "wall_seconds", "<=", 300.0, wall, ""))
    result = {
        "machine": machine_facts(),
        "command": "make bench", "wall_seconds": wall, "event": event,
        "targets": [{"target": label, "metric": metric, "op": op, "threshold": target, "value": value,
                     "met": passes(value, op, target)} for label, metric, op, target, value, _ in rows],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "intent.json").write_text(json.dumps(result, indent=2))
    print("\n| target | threshold | measured | met | anchor |\n|---|---|---|---|---|")
    for label, _, op, target, value, anchor in rows:
        shown = "missing" if value is None else f"{value:.3f}"
        print(f"| {label} | {op} {target:g} | {shown} | {'yes' if passes(value, op, target) else 'NO'} | {anchor} |")
    extra = {k: event.get(k) for k in ("teacher_ensemble_accuracy", "student_accuracy", "baseline_accuracy",
                                       "student_int8_accuracy", "teacher_classifier_latency_p50_ms",
                                       "student_latency_p50_ms", "student_int8_latency_p50_ms", "teacher_size_mb",
                                       "student_size_mb", "student_int8_size_mb", "promote")}
    print("\n" + json.dumps(extra, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
