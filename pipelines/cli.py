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
    from mangadistill import storage
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


def _ensure_data(args) -> dict[str, Path]:
    paths = _data_paths(args.workdir)
    if not all(p.exists() for p in paths.values()):
        print(f"generating sample data in {args.workdir / 'data'} ...", flush=True)
        generate_data(args.workdir, args.seed, args.n_labelled, args.n_production, args.n_eval)
    return paths


def _teacher_dir(workdir: Path) -> Path:
    return workdir / "teachers" / "intent"


def bootstrap_teacher(workdir: Path, labelled: Path, base_model: str) -> Path:
    from mangadistill.stages import bootstrap_intent_teacher

    out = _teacher_dir(workdir)
    print(f"fine-tuning the demo intent teacher from {base_model} on {labelled} ...", flush=True)
    summary = bootstrap_intent_teacher(str(labelled), base_model, str(out))
    print(f"teacher ready in {out}: {json.dumps(summary)}", flush=True)
    return out


def cmd_data(args) -> int:
    paths = generate_data(args.workdir, args.seed, args.n_labelled, args.n_production, args.n_eval)
    for name, path in paths.items():
        print(f"{name:17s} {path}")
    return 0


def cmd_bootstrap(args) -> int:
    paths = _ensure_data(args)
    bootstrap_teacher(args.workdir, paths["labelled"], args.base_model)
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


def cmd_run(args) -> int:
    from mangadistill_pipelines.intent_distillation import intent_distillation
    from mangadistill_pipelines.local import copy_output, run_locally

    if args.pipeline != "intent":
        raise SystemExit(f"unknown pipeline {args.pipeline!r}; available: intent")
    params = _parse_params(args.param)
    paths = _ensure_data(args)
    from mangadistill.models import resolve_model

    for ref in (args.teacher, params.get("student_model")):
        if ref is not None:
            resolve_model(ref)  # a bad reference fails here, clearly, before any task runs
    teacher = args.teacher
    if teacher is None:
        teacher_dir = _teacher_dir(args.workdir)
        if not (teacher_dir / "config.json").exists():
            bootstrap_teacher(args.workdir, paths["labelled"], args.base_model)
        teacher = str(teacher_dir)
    arguments = {
        "production_log_uri": str(paths["production_log"].resolve()),
        "eval_uri": str(paths["eval"].resolve()),
        "teacher_model": teacher,
        **params,
    }
    root = (args.workdir / "pipeline_root").resolve()
    try:
        local_inputs = [str(paths["production_log"].parent)] + [
            ref for ref in (teacher, params.get("student_model")) if ref and Path(ref).is_dir()]
        task = run_locally(intent_distillation, arguments, str(root), args.runner, not args.no_cache, local_inputs)
    except RuntimeError as exc:
        print(f"mangadistill: pipeline failed: {exc} (the failing task's log is above)", file=sys.stderr)
        return 1
    out = Path(args.output_dir).resolve()
    for output, name in INTENT_OUTPUTS.items():
        copy_output(task.outputs[output].path, out / name)
    promote = bool(task.outputs["promote"])
    event = json.loads((out / INTENT_OUTPUTS["event"]).read_text())
    print()
    print(f"report:   {out / INTENT_OUTPUTS['report']}")
    print(f"event:    {out / INTENT_OUTPUTS['event']}")
    print(f"student:  {out / INTENT_OUTPUTS['student']}  (int8: {out / INTENT_OUTPUTS['student_int8']})")
    failed = [name for name, passed in event.get("gates", {}).items() if not passed]
    print(f"decision: {'PROMOTE' if promote else 'DO NOT PROMOTE'}"
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
    from mangadistill.factcheck import check_facts_command

    summary = check_facts_command(args.file, findings_out=args.findings_out, catalog_path=args.catalog)
    return 1 if args.fail_over is not None and summary["hallucination_rate"] > args.fail_over else 0


def cmd_serve_teacher(args) -> int:
    from mangadistill.teacher_server import serve

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
        return p

    data = with_data_options(sub.add_parser("data", help="generate the built-in MangaAssist sample data"))
    data.set_defaults(func=cmd_data)

    boot = with_data_options(sub.add_parser("bootstrap-teacher", help="fine-tune the demo intent teacher"))
    boot.add_argument("--base-model", default="mpnet-base", help="encoder to fine-tune (default: %(default)s)")
    boot.set_defaults(func=cmd_bootstrap)

    run = with_data_options(sub.add_parser("run", help="run a pipeline locally with kfp.local"))
    run.add_argument("pipeline", choices=["intent"])
    run.add_argument("--output-dir", default="mangadistill-output", help="where the final outputs are copied")
    run.add_argument("--teacher", help="teacher classifier (folder, gs:// or builtin); default: the demo teacher")
    run.add_argument("--base-model", default="mpnet-base", help="base of the demo teacher if it must be built")
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
