"""Scale-out targets, measured in one run on this machine: sharded teacher labelling against a teacher with
capacity to spare, and data-parallel training against one process.

Labelling: the response pipeline's own fan-out (`response_shard_prompts` -> `dsl.ParallelFor` of `label_shard`
-> `response_merge_labels`) under kfp.local, against the fake chat server of the tests with a fixed latency per
request (a served teacher with capacity to spare: every shard's requests are answered concurrently), once with
1 shard and once with 4, each with an empty answer cache. Target: 4 shards >= 3x the throughput of 1, and the
merged rows are the same prompts, none lost or doubled.

Training: the intent trainer on the tiny dropout-free encoder the parity tests use, one process against two
under torchrun (gloo), the same global batch. Target: the same final loss within 1e-5. The step-time ratio is
reported as measured; on 2 cores two processes share the cores and show no speed-up.

    make bench-scaleout      # or: .venv/bin/python bench/scaleout_bench.py
"""


import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]  # the tests' fake teacher, launcher and tiny-model builder

import pyarrow as pa  # noqa: E402
from bench_support import machine_facts, passes  # noqa: E402
from fakes import FakeChatServer  # noqa: E402
from launch import PARITY_TOLERANCE, run_training  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LATENCY_S = 0.5
"""The fake teacher's answer time per request."""
PROMPTS = 96
SHARDS = 4
TARGET_SPEEDUP = 3.0


def sharded_labelling_pipeline():
    """The labelling fan-out of the response pipeline as a pipeline of its own (prompts file, teacher URL, shards)."""
    from kfp import dsl
    from kfp.dsl import Dataset

    from mangadistill_components.response.merge_labels import response_merge_labels
    from mangadistill_components.response.shard_prompts import response_shard_prompts
    from mangadistill_pipelines.response_distillation import LABELING_PARALLELISM, label_shard

    @dsl.pipeline(name="response-sharded-labeling-bench")
    def labelling(prompts_uri: str, base_url: str, shards: int) -> Dataset:
        prompts = dsl.importer(artifact_uri=prompts_uri, artifact_class=dsl.Dataset).output
        split = response_shard_prompts(prompts=prompts, shard_count=shards)
        with dsl.ParallelFor(split.outputs["Output"], parallelism=LABELING_PARALLELISM) as shard:
            labelled = label_shard(
                shards=split.outputs["shards"], shard=shard, teacher_model="gpt-4o-mini", teacher_base_url=base_url,
                teacher_concurrency=1, teacher_max_new_tokens=0, teacher_prices_uri="", catalog_uri="",
                accelerator_type="nvidia.com/gpu", accelerator_count=0, gpu_node_selector={}, gpu_tolerations=[],
                cpu_request="1", cpu_limit="2", memory_request="1Gi", memory_limit="2Gi")
        merged = response_merge_labels(
            shards=split.outputs["shards"], shard_responses=dsl.Collected(labelled.outputs["teacher_responses"]),
            shard_quarantines=dsl.Collected(labelled.outputs["quarantine"]),
            shard_metrics=dsl.Collected(labelled.outputs["metrics"]))
        return merged.outputs["teacher_responses"]

    return labelling


def measure_labelling(scratch: Path) -> dict:
    """Wall time and merged prompt ids of the fan-out with 1 and SHARDS shards, each with a fresh cache."""
    from kfp import local

    from mangadistill.core import storage

    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = "127.0.0.1"
    os.environ["TEACHER_API_KEY"] = "bench-key"
    prompts_uri = str(scratch / "prompts.parquet")
    prompt_ids = [f"p{i:03d}" for i in range(PROMPTS)]
    storage.write_table(pa.Table.from_pylist([{"prompt_id": pid, "prompt": f"is manga volume {i} in stock?"}
                                              for i, pid in enumerate(prompt_ids)]), prompts_uri)
    pipeline = sharded_labelling_pipeline()
    server = FakeChatServer(latency_s=LATENCY_S)
    figures: dict = {"prompts": PROMPTS, "latency_s": LATENCY_S, "teacher_concurrency_per_shard": 1}
    try:
        for shards in (1, SHARDS):
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(scratch / f"root-{shards}"),
                       enable_caching=False)
            calls_before = len(server.requests)
            started = time.perf_counter()
            run = pipeline(prompts_uri=prompts_uri, base_url=server.base_url, shards=shards)
            seconds = time.perf_counter() - started
            merged = storage.read_table(run.output.path).column("prompt_id").to_pylist()
            figures[f"shards_{shards}"] = {
                "seconds": seconds, "prompts_per_second": PROMPTS / seconds,
                "teacher_calls": len(server.requests) - calls_before,
                "lost": len(set(prompt_ids) - set(merged)), "doubled": len(merged) - len(set(merged))}
    finally:
        server.close()
    figures["speedup"] = figures[f"shards_{SHARDS}"]["prompts_per_second"] / figures["shards_1"]["prompts_per_second"]
    return figures


INTENT_SCRIPT = """
import json, sys, time
import numpy as np
from mangadistill.intent.training import TrainConfig, train_classifier
spec = json.load(open(sys.argv[1]))
config = TrainConfig(epochs=3, batch_size=8, learning_rate=2e-3, beta=0.5, temperature=2.0, class_weighting="none",
                     warmup_ratio=0.0)
train_classifier(spec["base"], spec["texts"], spec["hard"], ["greeting", "complaint"], spec["out"], config,
                 soft_labels=np.array(spec["soft"], dtype=np.float32), progress=False)
"""


def measure_training(scratch: Path) -> dict:
    """Final loss and seconds per step of the intent trainer with 1 and 2 processes (the same global batch)."""
    from conftest import build_tiny_bert

    base = build_tiny_bert(scratch / "encoder")
    config = json.loads((base / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (base / "config.json").write_text(json.dumps(config))
    texts = [f"hello friend number {i}" for i in range(32)] + [f"my order {i} arrived broken" for i in range(32)]
    spec = {"base": str(base), "texts": texts, "hard": ["greeting"] * 32 + ["complaint"] * 32,
            "soft": [[0.8, 0.2]] * 32 + [[0.3, 0.7]] * 32}
    figures: dict = {"rows": len(texts), "epochs": 3, "global_batch": 8}
    for processes in (1, 2):
        out = run_training(INTENT_SCRIPT, spec, scratch, f"intent-{processes}", processes)
        report = json.loads((out / "training_report.json").read_text())
        steps = report["epochs_run"] * -(-len(texts) // 8)
        figures[f"processes_{processes}"] = {"final_loss": report["epoch_losses"][-1],
                                             "seconds_per_step": report["train_seconds"] / steps,
                                             "processes": report["processes"]}
    figures["loss_difference"] = abs(figures["processes_2"]["final_loss"] - figures["processes_1"]["final_loss"])
    figures["step_time_ratio_2_over_1"] = (figures["processes_2"]["seconds_per_step"]
                                           / figures["processes_1"]["seconds_per_step"])
    return figures


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="mangadistill-scaleout-") as folder:
        scratch = Path(folder)
        labelling = measure_labelling(scratch)
        training = measure_training(scratch)
    many = labelling[f"shards_{SHARDS}"]
    checks = [
        (f"labelling throughput, {SHARDS} shards / 1 shard", labelling["speedup"], ">=", TARGET_SPEEDUP),
        ("rows lost or doubled by the merge", float(many["lost"] + many["doubled"]), "<=", 0.0),
        ("final loss, |2 processes − 1 process|", training["loss_difference"], "<=", PARITY_TOLERANCE),
    ]
    targets = [{"figure": label, "value": value, "op": op, "target": target, "met": passes(value, op, target)}
               for label, value, op, target in checks]
    result = {"machine": machine_facts(), "command": "make bench-scaleout", "labelling": labelling,
              "training": training, "targets": targets}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaleout.json").write_text(json.dumps(result, indent=2))
    print("| figure | value | target | met |\n|---|---|---|---|")
    for row in targets:
        met = "yes" if row["met"] else "no"
        print(f"| {row['figure']} | {row['value']:.3g} | {row['op']} {row['target']:g} | {met} |")
    print(f"| labelling wall time, 1 / {SHARDS} shards | {labelling['shards_1']['seconds']:.1f} / "
          f"{many['seconds']:.1f} s | — | |")
    print(f"| training seconds per step, 1 / 2 processes (ratio) | {training['processes_1']['seconds_per_step']:.3f} / "
          f"{training['processes_2']['seconds_per_step']:.3f} ({training['step_time_ratio_2_over_1']:.2f}) | — | |")
    return 0 if all(row["met"] for row in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
