"""Response pipeline targets, measured in one run on this machine: cost per 1K responses of student against
teacher and the spread of that cost reduction over the gate's repeated measurements, teacher preference match
and hallucination rate, with the wall time of `mangadistill run response`.

The gate-check task measures teacher and student throughput side by side (a warm-up each, then 3 rounds taking
them in turn) and prices both from the medians. The bench then takes that whole measurement 3 more times on
the run's own teacher and served student (`stages.measure_gate_throughput`, priced with the gate's hourly
prices and mean response tokens): the spread (max − min) of those 3 cost reductions is the repeatability
target. The gate's own cost_reduction_spread (max − min of the reduction round by round) is reported too.

Runs `mangadistill run response --no-cache` (any `--param KEY=VALUE` is passed through), reads the gate's
event and the response-gate-check task's metrics from the kfp.local pipeline root, writes bench/results/response.json
and prints a Markdown table for the README. The labelling throughput targets are measured by
bench/response_labeling_bench.py (`make bench-response` runs both).

    make bench-response      # or: .venv/bin/python bench/response_bench.py [--param keep_every=3 ...]
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
# (label, metric, op, target): the targets, stricter than the packaged gate on cost (0.5)
TARGETS = [
    ("cost reduction per 1K responses, 1 − student / teacher", "cost_reduction", ">=", 0.80),
    ("cost reduction spread over 3 repeated side-by-side measurements (max − min)", "repeated_cost_reduction_spread",
     "<=", 0.05),
    ("teacher preference match (pairwise judge, both orders)", "teacher_preference_match", ">=", 0.85),
    ("catalog hallucination rate of the student", "hallucination_rate", "<=", 0.04),
]
REPORTED = ("student_cost_per_1k_usd", "teacher_cost_per_1k_usd", "cost_student_tokens_per_s_median",
            "cost_student_tokens_per_s_min", "cost_student_tokens_per_s_max", "cost_teacher_tokens_per_s_median",
            "cost_teacher_tokens_per_s_min", "cost_teacher_tokens_per_s_max", "cost_repeats", "cost_prompts",
            "cost_max_new_tokens", "cost_reduction_spread", "repeated_cost_reductions",
            "student_mean_response_tokens", "teacher_mean_response_tokens",
            "judge_judgments", "judge_position_a_share", "judge_order_consistency", "unanswered_prompts",
            "base_hallucination_rate", "teacher_hallucination_rate", "final_train_loss")


def _gate_metrics(pipeline_root: Path) -> dict[str, float]:
    """The metrics the newest response run's response-gate-check task logged (its executor output)."""
    found = sorted(pipeline_root.glob("response-distillation-*/response-gate-check/executor_output.json"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no response-distillation response-gate-check output under {pipeline_root}")
    output = json.loads(found[-1].read_text())
    return output["artifacts"]["metrics"]["artifacts"][0]["metadata"]


def repeated_cost_reductions(params: dict[str, str], out: Path, metrics: dict, times: int = 3) -> list[float]:
    """cost_reduction of `times` more side-by-side measurements of the run's teacher and served student, each
    taken exactly as the gate takes it, priced with the gate's hourly prices and mean response tokens."""
    from mangadistill.response.evalset import handwritten_eval_set
    from mangadistill.response.gate import ResponseGateConfig, serving_cost
    from mangadistill.response.stages import measure_gate_throughput
    from mangadistill_pipelines.response_distillation import RESPONSE_DEMO_EVAL_PER_SLICE, RESPONSE_DEMO_PARAMS

    run = {**RESPONSE_DEMO_PARAMS, **params}
    config = ResponseGateConfig(served_variant=run.get("served_variant", "baseline"),
                                teacher_model=run["teacher_model"], teacher_base_url=run.get("teacher_base_url", ""),
                                teacher_hardware=run.get("teacher_hardware", ""))
    rows = handwritten_eval_set(per_slice=RESPONSE_DEMO_EVAL_PER_SLICE).to_pylist()  # the demo's eval set, in its order
    reductions = []
    for _ in range(times):
        throughput = measure_gate_throughput(config, rows, str(out / "student"), str(out / "student-quantized"))
        reductions.append(serving_cost(
            throughput, metrics.get("student_usd_per_hour"), metrics.get("teacher_usd_per_hour"),
            metrics.get("student_mean_response_tokens"), metrics["teacher_mean_response_tokens"],
            [metrics["teacher_mean_recorded_cost_usd"]])["cost_reduction"])
    return reductions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / ".mangadistill"))
    parser.add_argument("--output-dir", default=str(ROOT / "mangadistill-output" / "bench-response"))
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a pipeline parameter for the run (repeatable)")
    args = parser.parse_args()
    workdir, out = Path(args.workdir), Path(args.output_dir)
    command = [str(Path(sys.executable).with_name("mangadistill")), "run", "response", "--workdir", str(workdir),
               "--output-dir", str(out), "--no-cache", *(f"--param={p}" for p in args.param)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    run = subprocess.run(command, env=env)
    wall = time.perf_counter() - started
    if run.returncode != 0:  # a refused student still exits 0; the decision is in the event
        print(f"response bench: `{' '.join(command)}` failed (exit {run.returncode})", file=sys.stderr)
        return run.returncode
    event = json.loads((out / "distilled_model_eval.json").read_text())
    metrics = _gate_metrics(workdir / "pipeline_root")
    reductions = repeated_cost_reductions(dict(p.split("=", 1) for p in args.param), out, metrics)
    metrics.update(repeated_cost_reductions=reductions,
                   repeated_cost_reduction_spread=max(reductions) - min(reductions))
    values = {**{name: metrics.get(name) for name in REPORTED},
              **{metric: metrics.get(metric) for _, metric, _, _ in TARGETS}}
    result = {
        "machine": machine_facts(),
        "command": "make bench-response", "params": args.param, "wall_seconds": wall, "event": event,
        "figures": values,
        "targets": [{"target": label, "metric": metric, "op": op, "threshold": target, "value": values[metric],
                     "met": passes(values[metric], op, target)} for label, metric, op, target in TARGETS],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "response.json").write_text(json.dumps(result, indent=2))
    print("\n| target | threshold | measured | met |\n|---|---|---|---|")
    for row in result["targets"]:
        shown = "missing" if row["value"] is None else f"{row['value']:.3f}"
        print(f"| {row['target']} | {row['op']} {row['threshold']:g} | {shown} | {'yes' if row['met'] else 'NO'} |")
    print("\n" + "\n".join(f"{name}: {value}" for name, value in values.items() if name in REPORTED))
    print(f"wall {wall:.0f} s; gate: {'PROMOTE' if event['promote'] else 'DO NOT PROMOTE'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
