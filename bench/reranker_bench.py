"""Reranker pipeline targets, measured as ratios in one run on this machine, and a small α sweep.

Makes sure the reranker sample data and the demo teacher exist (first-time set-up: `bootstrap-teacher
reranker`, timed separately when it runs), runs `mangadistill run reranker` with caching off (timed), reads
the gate's event, then trains one student per other α of the sweep on the same teacher scores (the run's
teacher-labeling output) and measures each student's NDCG@10 on the same held-out queries. Writes
bench/results/reranker.json and prints a Markdown table for the README.

    make bench-reranker      # or: .venv/bin/python bench/reranker_bench.py [--workdir DIR] [--alphas 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_support import machine_facts, passes

from mangadistill.core import storage
from mangadistill.reranker.cross_encoder import CrossEncoderScorer, RerankerTrainConfig
from mangadistill.reranker.metrics import mean_ranking_metrics, per_query_metrics
from mangadistill.reranker.stages import run_reranker_training
from mangadistill_pipelines.demo import demo_teacher_dir
from mangadistill_pipelines.reranker_distillation import (
    RERANKER_OUTPUTS,
    reranker_data_paths,
    reranker_distillation,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PIPELINE_DEFAULTS = {name: reranker_distillation.component_spec.inputs[name].default for name in (
    "alpha", "max_length", "epochs", "batch_size", "learning_rate", "labelled_per_query", "student_model", "seed",
    "distill", "supervised_target")}
"""The reranker pipeline's defaults that the α sweep reuses (everything but α)."""

# (label, metric, op, target)
TARGETS = [
    ("student NDCG@10 / teacher NDCG@10", "ndcg_retained", ">=", 0.97),
    ("CPU speed-up to rerank 50 candidates, teacher / student (fp32, p50)", "latency_speedup_p50", ">=", 5.0),
    ("CPU speed-up, teacher / int8 student (ONNX Runtime, p50)", "int8_latency_speedup_p50", ">=", 5.0),
    ("int8 student NDCG@10 / teacher NDCG@10", "int8_ndcg_retained", ">=", 0.95),
    ("student NDCG@10 − BM25 NDCG@10", "student_ndcg_gain_vs_bm25", ">", 0.0),
    ("teacher NDCG@10 − BM25 NDCG@10", "teacher_ndcg_gain_vs_bm25", ">", 0.0),
    ("int8 size ratio (fp32 ONNX / int8 ONNX)", "int8_size_ratio", ">=", 3.5),
]
ANCHORS = [
    {"model": "MiniLM-L2 cross-encoder vs 12-layer (MS MARCO)", "ndcg_retained": 0.956, "speedup": 4.3},
    {"model": "TinyBERT-L2 cross-encoder vs 12-layer (MS MARCO)", "ndcg_retained": 0.94, "speedup": 9.4},
]



def _latest_output(pipeline_root: Path, task: str, output: str) -> Path:
    """The newest run's output of `task` under a kfp.local pipeline root (<root>/<run>/<task>/<output>)."""
    found = sorted(pipeline_root.glob(f"reranker-distillation-*/{task}/{output}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {task}/{output} under {pipeline_root}")
    return found[-1]


def _student_ndcg(student_dir: str, eval_uri: str, max_length: int) -> float:
    table = storage.read_table(eval_uri)
    scores = CrossEncoderScorer(student_dir, max_length).score(table.column("query").to_pylist(),
                                                               table.column("candidate_text").to_pylist())
    rankings = per_query_metrics(table.column("query_id").to_pylist(),
                                 np.asarray(table.column("relevance").to_pylist(), dtype=np.float64), scores, 10)
    return mean_ranking_metrics(rankings)["ndcg"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / ".mangadistill"))
    parser.add_argument("--output-dir", default=str(ROOT / "mangadistill-output" / "bench-reranker"))
    parser.add_argument("--alphas", default="0,1", help="the other α values of the sweep (comma-separated)")
    args = parser.parse_args()
    workdir, out = Path(args.workdir), Path(args.output_dir)
    cli = [str(Path(sys.executable).with_name("mangadistill"))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    bootstrap_seconds = None
    if not (demo_teacher_dir(workdir, "reranker") / "config.json").exists():
        started = time.perf_counter()
        subprocess.run([*cli, "bootstrap-teacher", "reranker", "--workdir", str(workdir)], check=True, env=env)
        bootstrap_seconds = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([*cli, "run", "reranker", "--workdir", str(workdir), "--output-dir", str(out), "--no-cache"],
                   check=True, env=env)
    wall = time.perf_counter() - started
    event = json.loads((out / RERANKER_OUTPUTS["event"]).read_text())

    teacher_scores = _latest_output(workdir / "pipeline_root", "reranker-teacher-labeling", "teacher_scores")
    data = reranker_data_paths(workdir)
    sweep = [{"alpha": PIPELINE_DEFAULTS["alpha"], "student_ndcg_at_10": event["student_ndcg_at_10"],
              "ndcg_retained": event["ndcg_retained"], "train_seconds": None, "source": "pipeline run"}]
    for alpha in (float(a) for a in args.alphas.split(",") if a.strip()):
        config = RerankerTrainConfig(
            epochs=PIPELINE_DEFAULTS["epochs"], batch_size=PIPELINE_DEFAULTS["batch_size"],
            learning_rate=PIPELINE_DEFAULTS["learning_rate"], max_length=PIPELINE_DEFAULTS["max_length"],
            alpha=alpha, seed=PIPELINE_DEFAULTS["seed"], distill_loss=PIPELINE_DEFAULTS["distill"],
            supervised_target=PIPELINE_DEFAULTS["supervised_target"])
        student = out / f"sweep-alpha-{alpha:g}"
        summary = run_reranker_training(str(teacher_scores), PIPELINE_DEFAULTS["student_model"], str(student),
                                        config, labelled_uri=str(data["train_candidates"]),
                                        labelled_per_query=PIPELINE_DEFAULTS["labelled_per_query"])
        ndcg = _student_ndcg(str(student), str(data["eval_candidates"]), config.max_length)
        sweep.append({"alpha": alpha, "student_ndcg_at_10": ndcg, "ndcg_retained": ndcg / event["teacher_ndcg_at_10"],
                      "train_seconds": summary["train_seconds"], "source": "bench retrain, same teacher scores"})

    rows = [(label, metric, op, target, event.get(metric)) for label, metric, op, target in TARGETS]
    rows.append(("`mangadistill run reranker` wall time, seconds", "wall_seconds", "<=", 300.0, wall))
    result = {
        "machine": machine_facts(),
        "command": "make bench-reranker", "wall_seconds": wall, "bootstrap_seconds": bootstrap_seconds,
        "event": event, "alpha_sweep": sorted(sweep, key=lambda row: row["alpha"]), "anchors": ANCHORS,
        "targets": [{"target": label, "metric": metric, "op": op, "threshold": target, "value": value,
                     "met": passes(value, op, target)} for label, metric, op, target, value in rows],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reranker.json").write_text(json.dumps(result, indent=2))
    print("\n| target | threshold | measured | met |\n|---|---|---|---|")
    for label, _, op, target, value in rows:
        shown = "missing" if value is None else f"{value:.3f}"
        print(f"| {label} | {op} {target:g} | {shown} | {'yes' if passes(value, op, target) else 'NO'} |")
    print("\n| α | student NDCG@10 | retained |\n|---|---|---|")
    for row in result["alpha_sweep"]:
        print(f"| {row['alpha']:g} | {row['student_ndcg_at_10']:.4f} | {row['ndcg_retained']:.3f} |")
    print("\nanchors (MS MARCO):", "; ".join(f"{a['model']}: {a['ndcg_retained']:.1%} at {a['speedup']}×"
                                           for a in ANCHORS))
    print(f"this run: {event.get('ndcg_retained', float('nan')):.1%} at {event.get('latency_speedup_p50', 0):.1f}× "
          f"(fp32), {event.get('int8_ndcg_retained', float('nan')):.1%} at "
          f"{event.get('int8_latency_speedup_p50', 0):.1f}× (int8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
