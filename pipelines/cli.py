"""The `mangadistill` command line: sample data, demo teachers, local pipeline runs, compilation."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_WORKDIR = Path(os.environ.get("MANGADISTILL_WORKDIR", ".mangadistill"))
DEFAULT_OUTPUT_ROOT = "mangadistill-output"
PUBLISHED_DIR = "published"
"""`run` (subprocess runner) publishes a promoted student under OUTPUT_DIR/PUBLISHED_DIR unless models_root is given."""
"""`run NAME` writes under DEFAULT_OUTPUT_ROOT/NAME unless --output-dir is given."""
REPO_ROOT = Path(__file__).resolve().parent.parent
PIPELINE_NAMES = ("intent", "reranker", "response")
"""The names of `demo.demo_pipelines()`, known before importing kfp (the parser needs them)."""

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


def cmd_data(args) -> int:
    from mangadistill_pipelines.demo import demo_pipelines

    for demo in demo_pipelines().values():
        for name, path in demo.generate_data(args).items():
            print(f"{demo.name + '_' + name:40s} {path}")
    return 0


def cmd_bootstrap(args) -> int:
    from mangadistill_pipelines.demo import demo_pipelines

    demo = demo_pipelines()[args.pipeline]
    if demo.bootstrap_teacher is None:
        raise ValueError(f"the {args.pipeline} pipeline has no demo teacher to fine-tune")
    demo.bootstrap_teacher(args)
    return 0


EXIT_REJECTED = 3
"""`run --fail-on-reject` exit status when the gate says DO NOT PROMOTE (1: a task failed; 2: bad input)."""
EXIT_BAD_DATA = 2
"""`validate-data` exit status when a file breaks its pipeline's input contracts."""


def check_run_parameters(pipeline: str, params: dict) -> None:
    """ValueError naming every --param the compiled pipeline does not take or whose value has the wrong type
    (`submit.check_parameters`; parameters the demo fills in need not be given)."""
    from mangadistill_pipelines.submit import check_parameters, load_package

    check_parameters(load_package(pipeline), params, require_all=False)


def file_argument_folders(arguments: dict) -> list[str]:
    """The folders of every argument that names a local file or folder: the DockerRunner mounts them."""
    folders = []
    for value in arguments.values():
        if isinstance(value, str) and value and "://" not in value and Path(value).exists():
            path = Path(value).resolve()
            folders.append(str(path if path.is_dir() else path.parent))
    return folders


def _newest_version(models_root: str) -> str:
    """The most recently published version folder under a local models root (`core.publish` layout)."""
    from mangadistill.core.publish import VERSION_FILE

    if "://" in models_root:
        return f"{models_root}/<model>/<run id>/"
    versions = sorted(Path(models_root).glob(f"*/*/{VERSION_FILE}"), key=lambda path: path.stat().st_mtime)
    return str(versions[-1].parent) if versions else f"nothing under {models_root} (the publish task did not run)"


def cmd_run(args) -> int:
    from mangadistill.core.events import emit_run_outcome
    from mangadistill.core.models import resolve_model
    from mangadistill_pipelines.demo import demo_pipelines
    from mangadistill_pipelines.local import failure_of, run_locally

    params = _parse_params(args.param)
    check_run_parameters(args.pipeline, params)  # before any data, teacher or task: a typo costs nothing
    demo = demo_pipelines()[args.pipeline]
    if demo.bootstrap_teacher is not None and "teacher_model" in params:  # the user's teacher: no demo teacher
        if args.teacher is not None and args.teacher != params["teacher_model"]:
            raise ValueError(f"--teacher {args.teacher!r} and --param teacher_model={params['teacher_model']!r} "
                             "disagree: give one")
        args.teacher = params["teacher_model"]
    for ref in (args.teacher, params.get("student_model")):
        if ref is not None:
            resolve_model(ref)  # a bad reference fails here, clearly, before any task runs
    prepared = demo.prepare(args, params)
    out = Path(args.output_dir or Path(DEFAULT_OUTPUT_ROOT, args.pipeline)).resolve()
    if args.runner == "subprocess":  # the DockerRunner mounts host folders read-only: publish only when asked
        prepared.arguments.setdefault("models_root", str(out / PUBLISHED_DIR))
    root = (args.workdir / "pipeline_root").resolve()
    local_inputs = prepared.local_inputs + file_argument_folders(prepared.arguments)
    try:
        task = run_locally(demo.pipeline, prepared.arguments, str(root), args.runner, not args.no_cache, local_inputs)
    except RuntimeError as exc:
        failed_task, message = failure_of(exc)  # the run event a cluster's exit handler logs, here too
        emit_run_outcome(demo.pipeline.name, "", "FAILED", failed_task=failed_task, error=message)
        print(f"mangadistill: pipeline failed: {exc} (the failing task's log is above)", file=sys.stderr)
        return 1
    event = demo.publish(task, out, prepared)
    emit_run_outcome(demo.pipeline.name, "", "SUCCEEDED", gate_event_uri=str(demo.output_paths(out)["event"]))
    print()
    for output, path in {**demo.output_paths(out), **{name: out / name for name in prepared.extra_outputs}}.items():
        print(f"{output + ':':18s}{path}")
    failed = [name for name, passed in event.get("gates", {}).items() if not passed]
    promoted = bool(task.outputs["promote"])
    print(f"decision: {'PROMOTE' if promoted else 'DO NOT PROMOTE'}"
          + (f" (failed gates: {', '.join(failed)})" if failed else ""))
    if promoted and prepared.arguments.get("models_root"):
        print(f"published:        {_newest_version(prepared.arguments['models_root'])}")
    return EXIT_REJECTED if args.fail_on_reject and not promoted else 0


def cmd_params(args) -> int:
    """Print the pipeline's parameters: name, type, default (from the compiled YAML)."""
    from mangadistill_pipelines.submit import load_package

    package = load_package(args.pipeline)
    print(f"{package.name} ({package.path}):")
    for name, spec in sorted(package.parameters.items()):
        default = json.dumps(spec["defaultValue"]) if "defaultValue" in spec else "(required)"
        print(f"  {name:32s} {spec.get('parameterType', '?'):15s} {default}")
    return 0


def cmd_submit(args) -> int:
    from mangadistill_pipelines.submit import KfpUnreachableError, submit

    try:
        run_id = submit(
            args.pipeline, args.host, namespace=args.namespace, experiment=args.experiment,
            run_name=args.run_name, parameters=_parse_params(args.param), token_env=args.token_env,
            timeout_s=args.timeout, wait=args.wait, service_account=args.service_account,
            pipeline_root=args.pipeline_root, enable_caching=False if args.no_cache else None,
            progress=lambda message: print(message, flush=True), image_registry=args.image_registry,
            image_pins=Path(args.image_pins),
        )
    except (KfpUnreachableError, PermissionError, TimeoutError, RuntimeError) as exc:
        print(f"mangadistill: error: {exc}", file=sys.stderr)
        return 1
    print(f"run id: {run_id}")
    return 0


def cmd_compile(args) -> int:
    from mangadistill_pipelines.compile import compile_all, compile_pinned

    if args.image_registry:
        written = compile_pinned(Path(args.out), args.image_registry, Path(args.image_pins))
    else:
        written = compile_all(Path(args.root))
    for path in written:
        print(path)
    return 0


def cmd_check_facts(args) -> int:
    """Exit 0, EXIT_OVER_THRESHOLD (1) when the failure rate is above --fail-over, EXIT_UNREADABLE (2) when
    the file or the catalog cannot be read (never a traceback, never the --fail-over code)."""
    from mangadistill.response.factcheck import EXIT_UNREADABLE, check_facts_command
    from mangadistill.sample_data.catalog import catalog_records

    try:
        return check_facts_command(args.file, catalog_records(args.catalog), args.findings_out, args.fail_over)
    except (OSError, ValueError) as error:  # StorageError, DataContractError, a bad catalog
        print(f"mangadistill check-facts: error: {error}", file=sys.stderr)
        return EXIT_UNREADABLE


def cmd_validate_data(args) -> int:
    """Check each FILE (or PARAMETER=FILE) against the pipeline's input contracts; print one verdict per file;
    exit 2 when any file is bad (or a PARAMETER is not one of the pipeline's table inputs)."""
    import importlib

    from mangadistill.core.stage_io import check_input_files

    inputs = importlib.import_module(f"mangadistill.{args.pipeline}.inputs").PIPELINE_INPUTS
    try:
        checks = check_input_files(args.files, inputs)
    except ValueError as error:
        print(f"mangadistill validate-data: error: {error}", file=sys.stderr)
        return EXIT_BAD_DATA
    for check in checks:
        print(f"{check.uri}: {check.message}" if check.ok else f"{check.uri}: BAD: {check.message}")
    return 0 if all(check.ok for check in checks) else EXIT_BAD_DATA


def cmd_redact(args) -> int:
    """Write FILE with its --column redacted and print the spans replaced per kind; exit 2 when FILE, the column
    or --out cannot be used."""
    from mangadistill.core.redaction import redact_file

    try:
        done, out = redact_file(args.file, args.column, args.out)
    except (OSError, ValueError) as error:  # StorageError, a missing or non-text column
        print(f"mangadistill redact: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.file}: {done.rows_changed} of {done.table.num_rows} rows changed in column '{done.column}'")
    for kind, count in done.counts.items():
        print(f"  {kind:8s} {count}")
    print(f"wrote {out}")
    return 0


def cmd_serve_teacher(args) -> int:
    """Serve until interrupted; exit 2 before loading anything when --api-key-env names an unset/empty variable."""
    from mangadistill.core.teacher_server import ServerKeyMissing, require_api_key, serve

    try:
        require_api_key(args.api_key_env)
    except ServerKeyMissing as error:
        print(f"mangadistill serve-teacher: error: {error}", file=sys.stderr)
        return 2
    serve(args.host, args.port, args.model, name=args.name, max_new_tokens=args.max_new_tokens,
          api_key_env=args.api_key_env, socket_timeout_s=args.socket_timeout, max_workers=args.max_workers)
    return 0


def cmd_review(args) -> int:
    """Serve the review page until interrupted; exit 2 when the packet or the output file cannot be used."""
    from mangadistill.response.gate.review_server import default_out, serve

    try:
        serve(args.packet, args.out or default_out(args.packet), args.reviewer, args.host, args.port)
    except (OSError, ValueError) as error:  # StorageError, DataContractError, a port in use, a bad --out
        print(f"mangadistill review: error: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_label_studio(args) -> int:
    """Export a review packet as Label Studio tasks, or import a Label Studio JSON export as completed reviews;
    exit 2 when a file cannot be used (the message names the file and the first bad task)."""
    from mangadistill.response.gate.label_studio import default_tasks_out, export_label_studio, import_label_studio

    try:
        if args.action == "export":
            done = export_label_studio(args.packet, args.out or default_tasks_out(args.packet))
            print(f"wrote {done.tasks} Label Studio tasks to {done.tasks_uri}; paste {done.config_uri} into the "
                  "project's Settings > Labeling Interface > Code, then import the tasks")
        else:
            done = import_label_studio(args.export, args.out, packet_uri=args.packet,
                                       allow_unannotated=args.allow_unannotated)
            print(f"{done.summary()}; give it to `run response --param completed_reviews_uri={done.reviews_uri}`")
    except (OSError, ValueError) as error:  # StorageError, DataContractError, LabelStudioImportError
        print(f"mangadistill label-studio {args.action}: error: {error}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mangadistill", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    from mangadistill_components.images import DEFAULT_PINS_FILE
    from mangadistill_pipelines.reranker_distillation import RERANKER_DATA
    from mangadistill_pipelines.response_distillation import RESPONSE_DEMO_EVAL_PER_SLICE, RESPONSE_DEMO_SCALE

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
                       help="response: share of the source document's dataset table (25,000 / 25,000 / 5,000 / 2,000) "
                            "(default: %(default)s)")
        p.add_argument("--response-eval-per-slice", type=int, default=RESPONSE_DEMO_EVAL_PER_SLICE,
                       help="response: rows per slice taken from the hand-written evaluation set, 1-18 "
                            "(default: %(default)s)")
        return p

    def with_pins(p: argparse.ArgumentParser) -> None:
        p.add_argument("--image-registry", metavar="REG",
                       help="use the stage images pushed to REG, pinned by digest (`make push REGISTRY=REG`)")
        p.add_argument("--image-pins", default=str(DEFAULT_PINS_FILE),
                       help="the pins file `make push` wrote (default: %(default)s)")

    data = with_data_options(sub.add_parser("data", help="generate the built-in MangaAssist sample data"))
    data.set_defaults(func=cmd_data)

    boot = with_data_options(sub.add_parser("bootstrap-teacher", help="fine-tune a demo teacher"))
    boot.add_argument("pipeline", nargs="?", choices=PIPELINE_NAMES, default="intent",
                      help="whose teacher: the intent classifier (default) or the reranker cross-encoder")
    boot.add_argument("--base-model", help="encoder to fine-tune (default: mpnet-base)")
    boot.set_defaults(func=cmd_bootstrap)

    run = with_data_options(sub.add_parser("run", help="run a pipeline locally with kfp.local"))
    run.add_argument("pipeline", choices=PIPELINE_NAMES)
    run.add_argument("--output-dir",
                     help=f"where the final outputs are copied (default: {DEFAULT_OUTPUT_ROOT}/PIPELINE)")
    run.add_argument("--teacher", help="teacher classifier (intent) or cross-encoder (reranker): folder, gs:// or "
                                       "builtin; default: the demo teacher. response: the local teacher LLM "
                                       "(default smollm2-135m); a managed API via --param teacher_base_url=...")
    run.add_argument("--base-model", help="base of the demo teacher if it must be built (default: mpnet-base)")
    run.add_argument("--runner", choices=["subprocess", "docker"], default="subprocess")
    run.add_argument("--no-cache", action="store_true", help="rerun every task (kfp.local caching off)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="pipeline parameter (JSON values), e.g. --param beta=0.3 --param adjudicator=none; "
                          "`mangadistill params PIPELINE` lists them")
    run.add_argument("--fail-on-reject", action="store_true",
                     help=f"exit {EXIT_REJECTED} when the gate says DO NOT PROMOTE (for CI use)")
    run.set_defaults(func=cmd_run)

    params_parser = sub.add_parser("params", help="list a pipeline's parameters, types and defaults")
    params_parser.add_argument("pipeline", help="a pipeline name (intent, reranker, response) or compiled YAML")
    params_parser.set_defaults(func=cmd_params)

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
    submit_parser.add_argument("--wait", action="store_true",
                               help="wait for the run, printing each change of state; exit 1 unless it succeeds")
    submit_parser.add_argument("--no-cache", action="store_true", help="rerun every task (KFP caching off)")
    with_pins(submit_parser)
    submit_parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait")
    submit_parser.set_defaults(func=cmd_submit)

    facts = sub.add_parser(
        "check-facts", help="check catalog claims in a responses file (JSONL or parquet)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="failure rate = (responses with an unsupported claim + empty or null responses) / responses\n"
               "exit status: 0 checked (and at most --fail-over); 1 failure rate above --fail-over;\n"
               "             2 FILE or --catalog unreadable (missing, not a table, no `response` column, no rows)")
    facts.add_argument("file", help="local path or gs:// URI of a table with a `response` column")
    facts.add_argument("--findings-out", help="write every finding (one row each) to this table")
    facts.add_argument("--catalog", help="catalog JSONL (default: the built-in sample catalog)")
    facts.add_argument("--fail-over", type=float, metavar="RATE",
                       help="exit 1 when the failure rate (empty and null responses count as failures) is above "
                            "RATE (for CI use)")
    facts.set_defaults(func=cmd_check_facts)

    validate = sub.add_parser("validate-data", help="check your own data files against a pipeline's input "
                                                    "contracts before a run (exit 2 on bad data)")
    validate.add_argument("pipeline", choices=PIPELINE_NAMES)
    validate.add_argument("files", nargs="+", metavar="[PARAMETER=]FILE",
                          help="parquet, JSONL or CSV (local or gs://); PARAMETER names the pipeline input it is for "
                               "(e.g. eval_uri=eval.parquet), otherwise it is checked as every table input")
    validate.set_defaults(func=cmd_validate_data)

    redact = sub.add_parser("redact", help="redact personal data in a table's text column before it goes anywhere; "
                                           "prints the spans replaced per kind")
    redact.add_argument("file", help="a parquet, JSONL or CSV table (local path or gs:// URI)")
    redact.add_argument("--column", default="text", help="the text column to redact (default: %(default)s)")
    redact.add_argument("--out", help="the redacted table (default: <FILE stem>.redacted.<ext> beside FILE); the "
                                      "format follows its suffix")
    redact.set_defaults(func=cmd_redact)

    serve_parser = sub.add_parser(
        "serve-teacher", help="serve a local instruct model behind an OpenAI-compatible chat-completions API")
    serve_parser.add_argument("--model", default="smollm2-135m", help="builtin name, folder or gs:// prefix")
    serve_parser.add_argument("--name", help="model name the API reports and accepts (default: the model ref)")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--max-new-tokens", type=int, default=512, help="cap on tokens per answer")
    serve_parser.add_argument("--api-key-env", help="require the key held in this environment variable "
                              "(refuses to start when it is unset or empty)")
    serve_parser.add_argument("--socket-timeout", type=float, default=30.0, metavar="SECONDS",
                              help="per-connection socket timeout (default: %(default)s)")
    serve_parser.add_argument("--max-workers", type=int, default=8,
                              help="connections served at once; more wait, then get 503 (default: %(default)s)")
    serve_parser.set_defaults(func=cmd_serve_teacher)

    from mangadistill.response.gate.review_server import DEFAULT_OUT_NAME, default_reviewer

    review = sub.add_parser("review", help="review a response run's blinded A/B packet in a local web page")
    review.add_argument("packet", help="the run's review_packet.parquet (local path or gs:// URI)")
    review.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s: this machine)")
    review.add_argument("--port", type=int, default=8765, help="port to listen on (default: %(default)s; 0: any)")
    review.add_argument("--out", help=f"completed reviews, a local .jsonl appended to as you review (default: "
                                      f"{DEFAULT_OUT_NAME} beside a local packet); give it to `run response "
                                      "--param completed_reviews_uri=...`")
    review.add_argument("--reviewer", default=default_reviewer(),
                        help="your name in the reviews; restarting with it skips the pairs you reviewed "
                             "(default: %(default)s)")
    review.set_defaults(func=cmd_review)

    label_studio = sub.add_parser("label-studio", help="review a packet in Label Studio instead: export its pairs "
                                                       "as tasks, import the project's JSON export as reviews")
    label_studio_actions = label_studio.add_subparsers(dest="action", required=True)
    ls_export = label_studio_actions.add_parser(
        "export", help="write the packet as Label Studio tasks (JSON) and the labelling config (XML) beside them")
    ls_export.add_argument("packet", help="the run's review_packet.parquet (local path or gs:// URI)")
    ls_export.add_argument("--out", help="the tasks JSON (default: label_studio_tasks.json beside a local packet); "
                                         "the config goes beside it as NAME.label_config.xml")
    ls_import = label_studio_actions.add_parser(
        "import", help="turn a Label Studio JSON export of those tasks into completed reviews for the gate")
    ls_import.add_argument("export", help="the project's export in Label Studio's JSON format (not JSON-MIN)")
    ls_import.add_argument("--packet", required=True,
                           help="the review packet the tasks were exported from: every packet_id is checked")
    ls_import.add_argument("--out", required=True, help="completed reviews to write (.jsonl or .parquet, local or "
                                                         "gs://); give it to `run response --param "
                                                         "completed_reviews_uri=...`")
    ls_import.add_argument("--allow-unannotated", action="store_true",
                           help="skip (and count) tasks nobody annotated instead of refusing the export")
    label_studio.set_defaults(func=cmd_label_studio)

    comp = sub.add_parser("compile", help="compile every pipeline and component to YAML")
    comp.add_argument("--root", default=str(REPO_ROOT), help="repository root (default: this checkout)")
    with_pins(comp)
    comp.add_argument("--out", default=str(REPO_ROOT / "build" / "compiled"),
                      help="with --image-registry: where the pinned YAML goes (default: %(default)s); the "
                           "checked-in YAML is never touched")
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
