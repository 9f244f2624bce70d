"""The `mangadistill` command line: sample data, demo teachers, local pipeline runs, compilation."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_WORKDIR = Path(os.environ.get("MANGADISTILL_WORKDIR", ".mangadistill"))
REPO_ROOT = Path(__file__).resolve().parent.parent

# stable names under --output-dir (documented in README.md)
INTENT_OUTPUTS = {
    "student": "student",
    "student_int8": "student-int8",
    "report": "report.html",
    "event": "distilled_model_eval.json",
}
RERANKER_OUTPUTS = {
    **INTENT_OUTPUTS,
    "eval_queries": "eval_queries.parquet",
    "eval_candidates": "eval_candidates.parquet",
}
"""Under --output-dir for `run reranker`: the pipeline's outputs, and the held-out queries (with the catalog facts
their grades come from) and their judged candidates the gate measured on."""
RERANKER_TEACHER_BASE = "mpnet-base"
RERANKER_DATA = {"n_train": 200, "n_production": 100, "n_eval": 20, "k": 20}
"""Reranker sample data sizes: queries per split and BM25 candidates per query (see README for why)."""
RESPONSE_OUTPUTS = {
    "student": "student",  # the merged LoRA student: a plain transformers causal LM folder
    "student_quantized": "student-quantized",  # int8/ and nf4/ (bitsandbytes), response_quantization_report.json
    "report": "report.html",
    "event": "distilled_model_eval.json",
    "review_packet": "review_packet.parquet",  # blinded A/B pairs (student vs base student) for human reviewers
    "review_key": "review_key.parquet",  # the packet's unblinding key: keep it away from the reviewers
    "teacher_review": "teacher_review.parquet",  # teacher answers kept out of training for unsupported claims
}
"""Under --output-dir for `run response`. Completed reviews of review_packet go back in with
--param completed_reviews_uri=FILE (columns packet_id, choice a/b/tie, reviewer)."""
RESPONSE_DEMO_SCALE = 0.00032
"""Share of the seed's dataset table in the CPU demo: 8 production prompts, 2 human-corrected, 1 refusal."""
RESPONSE_DEMO_EVAL_PER_SLICE = 2
RESPONSE_DEMO_PARAMS = {
    "teacher_model": "smollm2-135m", "teacher_max_new_tokens": 48, "teacher_concurrency": 1,
    "teacher_hardware": "gcp-n2-standard-2", "teacher_name": "smollm2-135m-local-teacher",
    "student_model": "smollm2-135m", "max_steps": 8, "batch_size": 4, "learning_rate": 1e-3, "max_length": 192,
    "lora_r": 8, "quantization_prompts": 3, "quantization_max_new_tokens": 32,
    "student_hardware": "gcp-n2-standard-2", "eval_max_new_tokens": 48, "student_name": "manga-student-135m-lora",
    "judge_model": "smollm2-135m",
}
"""`run response` on 2 CPU cores: SmolLM2-135M-Instruct teaches itself through the local HTTP teacher server
(the only instruct model that installs offline), the student is the same model with LoRA, and both are served
and priced on the machine they ran on (a 2-vCPU VM). The same model judges teacher against student through the
same HTTP path, with guided choice; it is too small to judge well, and the report says so when its verdicts
follow the position. --param overrides any of these (judge_base_url=URL judge_model=NAME for a real judge)."""


def _data_paths(workdir: Path) -> dict[str, Path]:
    data = workdir / "data"
    return {
        "catalog": data / "catalog.parquet",
        "labelled": data / "intent_labelled.parquet",
        "production_log": data / "intent_production_log.parquet",
        "production_truth": data / "intent_production_truth.parquet",
        "eval": data / "intent_eval.parquet",
        "eval_truth": data / "intent_eval_truth.parquet",
    }


def generate_data(workdir: Path, seed: int, n_labelled: int, n_production: int, n_eval: int) -> dict[str, Path]:
    """Write the catalog and the intent splits under `workdir`/data."""
    from mangadistill.core import storage
    from mangadistill.sample_data.catalog import load_catalog
    from mangadistill.sample_data.messages import build_sample_splits

    catalog = load_catalog()
    splits = build_sample_splits(
        seed=seed, n_labelled=n_labelled, n_production=n_production, n_eval=n_eval, titles=catalog.to_pylist()
    )
    paths = _data_paths(workdir)
    storage.write_table(catalog, str(paths["catalog"]))
    for name, table in splits.items():
        storage.write_table(table, str(paths[name]))
    return paths


def _reranker_data_paths(workdir: Path) -> dict[str, Path]:
    data = workdir / "data"
    names = ("train_queries", "train_candidates", "production_queries", "production_candidates", "production_truth",
             "eval_queries", "eval_candidates")
    return {name: data / f"reranker_{name}.parquet" for name in names}


def generate_reranker_data(workdir: Path, seed: int, n_train: int, n_production: int, n_eval: int,
                           k: int) -> dict[str, Path]:
    """Write the reranker's queries, BM25 candidates and judgments under `workdir`/data."""
    from mangadistill.core import storage
    from mangadistill.sample_data.queries import build_reranker_splits

    paths = _reranker_data_paths(workdir)
    for name, table in build_reranker_splits(seed, n_train, n_production, n_eval, k).items():
        storage.write_table(table, str(paths[name]))
    return paths


def _ensure_reranker_data(args) -> dict[str, Path]:
    paths = _reranker_data_paths(args.workdir)
    if not all(p.exists() for p in paths.values()):
        print(f"generating reranker sample data in {args.workdir / 'data'} ...", flush=True)
        generate_reranker_data(args.workdir, args.seed, args.n_rerank_train, args.n_rerank_production,
                               args.n_rerank_eval, args.rerank_k)
    return paths


def generate_response_data(workdir: Path, seed: int, scale: float, eval_per_slice: int) -> dict[str, Path]:
    """Write the response scenario's inputs under `workdir`/data/response-seed<seed>-scale<scale> (a folder per
    size, so the local runner's cache never reuses another size's tasks): 1.5 times the seed's targets at
    `scale` (de-duplication and the caps have something to do), and the fixed eval set, `eval_per_slice` rows
    per slice."""
    import math

    import pyarrow as pa

    from mangadistill.core import storage
    from mangadistill.response.dataset import mixture_targets
    from mangadistill.sample_data.responses import (
        generate_human_corrected,
        generate_production_prompts,
        generate_refusal_escalation,
        response_eval_set,
    )

    folder = workdir / "data" / f"response-seed{seed}-scale{scale:g}"
    targets = mixture_targets(scale)
    paths = {name: folder / f"{name}.{ext}" for name, ext in (
        ("production_prompts", "jsonl"), ("human_corrected", "parquet"), ("refusal_escalation", "parquet"),
        ("eval", "parquet"))}
    if all(path.exists() for path in paths.values()):
        return paths
    prompts = generate_production_prompts(math.ceil(1.5 * targets["production_prompts"]), seed)
    tables = {
        "production_prompts": pa.Table.from_pylist([{"prompt_id": p["prompt_id"], "prompt": p["prompt"]}
                                                    for p in prompts]),
        "human_corrected": pa.Table.from_pylist(
            generate_human_corrected(math.ceil(1.5 * targets["human_corrected"]), seed)),
        "refusal_escalation": pa.Table.from_pylist(
            generate_refusal_escalation(math.ceil(1.5 * targets["refusal_escalation"]), seed)),
        "eval": pa.Table.from_pylist(response_eval_set(per_slice=eval_per_slice)),
    }
    for name, table in tables.items():
        storage.write_table(table, str(paths[name]))
    return paths


def _ensure_data(args) -> dict[str, Path]:
    paths = _data_paths(args.workdir)
    if not all(p.exists() for p in paths.values()):
        print(f"generating sample data in {args.workdir / 'data'} ...", flush=True)
        generate_data(args.workdir, args.seed, args.n_labelled, args.n_production, args.n_eval)
    return paths


def _teacher_dir(workdir: Path, pipeline: str = "intent") -> Path:
    return workdir / "teachers" / pipeline


def bootstrap_teacher(workdir: Path, labelled: Path, base_model: str) -> Path:
    from mangadistill.intent.stages import bootstrap_intent_teacher

    out = _teacher_dir(workdir)
    print(f"fine-tuning the demo intent teacher from {base_model} on {labelled} ...", flush=True)
    summary = bootstrap_intent_teacher(str(labelled), base_model, str(out))
    print(f"teacher ready in {out}: {json.dumps(summary)}", flush=True)
    return out


def bootstrap_reranker_teacher(workdir: Path, train_candidates: Path, base_model: str) -> Path:
    from mangadistill.intent.stages import bootstrap_reranker_teacher as bootstrap

    out = _teacher_dir(workdir, "reranker")
    print(f"fine-tuning the demo reranker teacher (cross-encoder) from {base_model} on {train_candidates} ...",
          flush=True)
    summary = bootstrap(str(train_candidates), base_model, str(out))
    print(f"teacher ready in {out}: {json.dumps(summary)}", flush=True)
    return out


def cmd_data(args) -> int:
    paths = generate_data(args.workdir, args.seed, args.n_labelled, args.n_production, args.n_eval)
    paths.update({f"reranker_{name}": path for name, path in generate_reranker_data(
        args.workdir, args.seed, args.n_rerank_train, args.n_rerank_production, args.n_rerank_eval,
        args.rerank_k).items()})
    paths.update({f"response_{name}": path for name, path in generate_response_data(
        args.workdir, args.seed, args.response_scale, args.response_eval_per_slice).items()})
    for name, path in paths.items():
        print(f"{name:32s} {path}")
    return 0


def cmd_bootstrap(args) -> int:
    if args.pipeline == "reranker":
        paths = _ensure_reranker_data(args)
        bootstrap_reranker_teacher(args.workdir, paths["train_candidates"], args.base_model or RERANKER_TEACHER_BASE)
        return 0
    paths = _ensure_data(args)
    bootstrap_teacher(args.workdir, paths["labelled"], args.base_model or "mpnet-base")
    return 0


def _parse_params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _pipeline_arguments(args, params: dict) -> tuple[object, dict, dict[str, Path]]:
    """The pipeline function, its arguments and the data paths of `args.pipeline`; builds the demo teacher
    first when no --teacher is given and none is there yet."""
    if args.pipeline == "response":
        from mangadistill_pipelines.response_distillation import response_distillation

        paths = generate_response_data(args.workdir, args.seed, args.response_scale, args.response_eval_per_slice)
        cache = {"teacher_cache_uri": str((args.workdir / "response_teacher_cache").resolve())} \
            if args.runner == "subprocess" else {}  # the DockerRunner mounts inputs read-only
        return response_distillation, {
            **{f"{name}_uri": str(path.resolve()) for name, path in paths.items()},
            "scale": args.response_scale, **RESPONSE_DEMO_PARAMS, **cache,
            **({"teacher_model": args.teacher} if args.teacher else {}), **params,
        }, paths
    if args.pipeline == "reranker":
        from mangadistill_pipelines.reranker_distillation import reranker_distillation

        paths = _ensure_reranker_data(args)
        teacher = args.teacher
        if teacher is None:
            teacher_dir = _teacher_dir(args.workdir, "reranker")
            if not (teacher_dir / "config.json").exists():
                bootstrap_reranker_teacher(args.workdir, paths["train_candidates"],
                                           args.base_model or RERANKER_TEACHER_BASE)
            teacher = str(teacher_dir)
        return reranker_distillation, {
            "production_candidates_uri": str(paths["production_candidates"].resolve()),
            "production_queries_uri": str(paths["production_queries"].resolve()),
            "labelled_candidates_uri": str(paths["train_candidates"].resolve()),
            "eval_candidates_uri": str(paths["eval_candidates"].resolve()),
            "teacher_model": teacher,
            **params,
        }, paths
    from mangadistill_pipelines.intent_distillation import intent_distillation

    paths = _ensure_data(args)
    teacher = args.teacher
    if teacher is None:
        teacher_dir = _teacher_dir(args.workdir)
        if not (teacher_dir / "config.json").exists():
            bootstrap_teacher(args.workdir, paths["labelled"], args.base_model or "mpnet-base")
        teacher = str(teacher_dir)
    return intent_distillation, {
        "production_log_uri": str(paths["production_log"].resolve()),
        "eval_uri": str(paths["eval"].resolve()),
        "teacher_model": teacher,
        **params,
    }, paths


def cmd_run(args) -> int:
    from mangadistill.core.models import resolve_model
    from mangadistill_pipelines.local import copy_output, run_locally

    params = _parse_params(args.param)
    for ref in (args.teacher, params.get("student_model")):
        if ref is not None:
            resolve_model(ref)  # a bad reference fails here, clearly, before any task runs
    pipeline, arguments, paths = _pipeline_arguments(args, params)
    teacher = arguments["teacher_model"]
    root = (args.workdir / "pipeline_root").resolve()
    try:
        local_inputs = [str(next(iter(paths.values())).parent)] + [  # model folders in any parameter, too
            ref for ref in (teacher, *params.values()) if isinstance(ref, str) and ref and Path(ref).is_dir()]
        task = run_locally(pipeline, arguments, str(root), args.runner, not args.no_cache, local_inputs)
    except RuntimeError as exc:
        print(f"mangadistill: pipeline failed: {exc} (the failing task's log is above)", file=sys.stderr)
        return 1
    out = Path(args.output_dir).resolve()
    if args.pipeline == "response":
        return _finish_response_run(task, out)
    outputs = RERANKER_OUTPUTS if args.pipeline == "reranker" else INTENT_OUTPUTS
    for output, name in INTENT_OUTPUTS.items():
        copy_output(task.outputs[output].path, out / name)
    if args.pipeline == "reranker":
        for split_table in ("eval_queries", "eval_candidates"):
            copy_output(str(paths[split_table]), out / RERANKER_OUTPUTS[split_table])
    promote = bool(task.outputs["promote"])
    event = json.loads((out / outputs["event"]).read_text())
    print()
    print(f"report:   {out / outputs['report']}")
    print(f"event:    {out / outputs['event']}")
    print(f"student:  {out / outputs['student']}  (int8: {out / outputs['student_int8']})")
    if args.pipeline == "reranker":
        print(f"held-out: {out / outputs['eval_queries']}, {out / outputs['eval_candidates']}")
    failed = [name for name, passed in event.get("gates", {}).items() if not passed]
    print(f"decision: {'PROMOTE' if promote else 'DO NOT PROMOTE'}"
          + (f" (failed gates: {', '.join(failed)})" if failed else ""))
    return 0


def _finish_response_run(task, out: Path) -> int:
    """Copy the response pipeline's outputs to RESPONSE_OUTPUTS names under `out` and print the decision."""
    from mangadistill_pipelines.local import copy_output

    for output, name in RESPONSE_OUTPUTS.items():
        source = task.outputs[output].path
        copy_output(str(Path(source, "merged")) if output == "student" else source, out / name)
    event = json.loads((out / RESPONSE_OUTPUTS["event"]).read_text())
    print()
    for output, name in RESPONSE_OUTPUTS.items():
        print(f"{output + ':':18s}{out / name}")
    failed = [name for name, passed in event.get("gates", {}).items() if not passed]
    print(f"decision: {'PROMOTE' if bool(task.outputs['promote']) else 'DO NOT PROMOTE'}"
          + (f" (failed gates: {', '.join(failed)})" if failed else ""))
    return 0


def cmd_submit(args) -> int:
    from mangadistill_pipelines.submit import KfpUnreachableError, submit

    try:
        run_id = submit(
            args.pipeline, args.host, namespace=args.namespace, experiment=args.experiment,
            run_name=args.run_name, parameters=_parse_params(args.param), token_env=args.token_env,
            timeout_s=args.timeout, wait=args.wait, service_account=args.service_account,
            pipeline_root=args.pipeline_root,
        )
    except (KfpUnreachableError, PermissionError, TimeoutError, RuntimeError) as exc:
        print(f"mangadistill: error: {exc}", file=sys.stderr)
        return 1
    print(f"run id: {run_id}")
    return 0


def cmd_compile(args) -> int:
    from mangadistill_pipelines.compile import compile_all

    for path in compile_all(Path(args.root)):
        print(path)
    return 0


def cmd_check_facts(args) -> int:
    from mangadistill.response.factcheck import check_facts_command

    summary = check_facts_command(args.file, findings_out=args.findings_out, catalog_path=args.catalog)
    return 1 if args.fail_over is not None and summary["hallucination_rate"] > args.fail_over else 0


def cmd_serve_teacher(args) -> int:
    from mangadistill.core.teacher_server import serve

    serve(args.host, args.port, args.model, name=args.name, max_new_tokens=args.max_new_tokens,
          api_key_env=args.api_key_env)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mangadistill", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_data_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                       help="where sample data, demo teachers and local pipeline roots live (default: %(default)s)")
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--n-labelled", type=int, default=2000, help="teacher training split size")
        p.add_argument("--n-production", type=int, default=2500, help="unlabelled production log size")
        p.add_argument("--n-eval", type=int, default=1200, help="human-labelled evaluation split size")
        p.add_argument("--n-rerank-train", type=int, default=RERANKER_DATA["n_train"],
                       help="reranker: judged train queries (teacher bootstrap, supervised term)")
        p.add_argument("--n-rerank-production", type=int, default=RERANKER_DATA["n_production"],
                       help="reranker: unlabelled production queries (what the teacher scores)")
        p.add_argument("--n-rerank-eval", type=int, default=RERANKER_DATA["n_eval"],
                       help="reranker: held-out judged queries")
        p.add_argument("--rerank-k", type=int, default=RERANKER_DATA["k"], help="reranker: BM25 candidates per query")
        p.add_argument("--response-scale", type=float, default=RESPONSE_DEMO_SCALE,
                       help="response: share of the seed's dataset table (25,000 / 25,000 / 5,000 / 2,000) "
                            "(default: %(default)s)")
        p.add_argument("--response-eval-per-slice", type=int, default=RESPONSE_DEMO_EVAL_PER_SLICE,
                       help="response: rows per slice of the fixed human-reviewed eval set (default: %(default)s)")
        return p

    data = with_data_options(sub.add_parser("data", help="generate the built-in MangaAssist sample data"))
    data.set_defaults(func=cmd_data)

    boot = with_data_options(sub.add_parser("bootstrap-teacher", help="fine-tune a demo teacher"))
    boot.add_argument("pipeline", nargs="?", choices=["intent", "reranker"], default="intent",
                      help="whose teacher: the intent classifier (default) or the reranker cross-encoder")
    boot.add_argument("--base-model", help="encoder to fine-tune (default: mpnet-base)")
    boot.set_defaults(func=cmd_bootstrap)

    run = with_data_options(sub.add_parser("run", help="run a pipeline locally with kfp.local"))
    run.add_argument("pipeline", choices=["intent", "reranker", "response"])
    run.add_argument("--output-dir", default="mangadistill-output", help="where the final outputs are copied")
    run.add_argument("--teacher", help="teacher classifier (intent) or cross-encoder (reranker): folder, gs:// or "
                                       "builtin; default: the demo teacher. response: the local teacher LLM "
                                       "(default smollm2-135m); a managed API via --param teacher_base_url=...")
    run.add_argument("--base-model", help="base of the demo teacher if it must be built (default: mpnet-base)")
    run.add_argument("--runner", choices=["subprocess", "docker"], default="subprocess")
    run.add_argument("--no-cache", action="store_true", help="rerun every task (kfp.local caching off)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="pipeline parameter (JSON values), e.g. --param beta=0.3 --param adjudicator=none")
    run.set_defaults(func=cmd_run)

    from mangadistill_pipelines.submit import DEFAULT_EXPERIMENT, DEFAULT_TIMEOUT_S, RUNNER_SERVICE_ACCOUNT

    submit_parser = sub.add_parser("submit", help="submit a compiled pipeline to a Kubeflow Pipelines cluster")
    submit_parser.add_argument("pipeline", help="a compiled pipeline YAML, or a pipeline name (intent)")
    submit_parser.add_argument("--host", default=os.environ.get("KF_PIPELINES_ENDPOINT"),
                               required="KF_PIPELINES_ENDPOINT" not in os.environ,
                               help="KFP API URL, e.g. http://127.0.0.1:8888 (default: $KF_PIPELINES_ENDPOINT)")
    submit_parser.add_argument("--namespace", help="profile namespace (multi-user KFP only)")
    submit_parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    submit_parser.add_argument("--run-name")
    submit_parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                               help="pipeline parameter (JSON values), e.g. --param beta=0.3")
    submit_parser.add_argument("--token-env", default="KFP_TOKEN",
                               help="environment variable holding a bearer token (default: %(default)s)")
    submit_parser.add_argument("--service-account", default=RUNNER_SERVICE_ACCOUNT,
                               help="runner ServiceAccount; '' for KFP's default (default: %(default)s)")
    submit_parser.add_argument("--pipeline-root", help="artifact root; default: the cluster's kfp-launcher")
    submit_parser.add_argument("--wait", action="store_true", help="wait for the run; exit 1 unless it succeeds")
    submit_parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait")
    submit_parser.set_defaults(func=cmd_submit)

    facts = sub.add_parser("check-facts", help="check catalog claims in a responses file (JSONL or parquet)")
    facts.add_argument("file", help="local path or gs:// URI of a table with a `response` column")
    facts.add_argument("--findings-out", help="write every finding (one row each) to this table")
    facts.add_argument("--catalog", help="catalog JSONL (default: the built-in sample catalog)")
    facts.add_argument("--fail-over", type=float, metavar="RATE",
                       help="exit 1 when the hallucination rate is above RATE (for CI use)")
    facts.set_defaults(func=cmd_check_facts)

    serve_parser = sub.add_parser(
        "serve-teacher", help="serve a local instruct model behind an OpenAI-compatible chat-completions API")
    serve_parser.add_argument("--model", default="smollm2-135m", help="builtin name, folder or gs:// prefix")
    serve_parser.add_argument("--name", help="model name the API reports and accepts (default: the model ref)")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--max-new-tokens", type=int, default=512, help="cap on tokens per answer")
    serve_parser.add_argument("--api-key-env", help="require the key held in this environment variable")
    serve_parser.set_defaults(func=cmd_serve_teacher)

    comp = sub.add_parser("compile", help="compile every pipeline and component to YAML")
    comp.add_argument("--root", default=str(REPO_ROOT), help="repository root (default: this checkout)")
    comp.set_defaults(func=cmd_compile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mangadistill: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
