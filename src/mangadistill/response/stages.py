"""One function per stage of the response pipeline; each KFP component in components/response/<stage>/ calls
exactly one. A stage reads its inputs by URI (local path or gs://), validates them against their contract
(contracts.py), does the work, writes its outputs and a quarantine table, and returns the finite metrics the
component logs.

dataset -> teacher labeling (production prompts, and the eval prompts) -> curation -> training -> quantization
-> evaluation and gate. Personal data is redacted in the dataset stage, and again (a no-op on its output) right
before any text is sent to a teacher, so no raw prompt reaches a teacher whatever feeds the labelling stage.
An empty catalog_uri stands for the packaged sample catalog, the demo's default.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from mangadistill.core import catalog, storage
from mangadistill.core.chat_api import ChatClient, PriceTable
from mangadistill.core.contracts import concat_quarantine, quarantine_table, validate_table
from mangadistill.core.events import copy_event
from mangadistill.core.publish import ModelCard, PublishedVersion, publish_version
from mangadistill.core.redaction import PII_KINDS, redact_text
from mangadistill.core.stage_io import loggable
from mangadistill.core.training import default_device
from mangadistill.response.cache import ResponseCache
from mangadistill.response.contracts import RESPONSE_EVAL, RESPONSE_EXAMPLES, RESPONSE_PROMPTS, TEACHER_RESPONSES

if TYPE_CHECKING:
    from mangadistill.response.gate import ResponseGateConfig, ResponseGateOutcome, SideBySideThroughput
    from mangadistill.response.labeling import ResponseLabelingConfig
    from mangadistill.response.training import ResponseTrainConfig

log = logging.getLogger(__name__)

DATASET_FILES = ("prompts", "human_corrected", "refusal_escalation", "quarantine")
"""Tables `run_response_dataset` writes (as <name>.parquet) besides manifest.json."""
ANSWER_FILES = ("student", "base_student", "judgments")
"""Tables `run_response_gate_check` writes (as <name>.parquet) in its answers folder."""
LOCAL_TEACHER_HOST = "127.0.0.1"
LOCAL_JUDGE_TIMEOUT_S = 120.0
"""Per judgment of an in-process judge (one pass over the judge prompt, then its three choices) on a busy CPU."""


def _catalog(catalog_uri: str) -> list[dict]:
    """The catalog records at `catalog_uri` (JSONL, local or gs://); empty: the packaged sample catalog."""
    if catalog_uri:
        return catalog.catalog_records(storage.local_copy(catalog_uri))
    from mangadistill.sample_data.catalog import catalog_records

    return catalog_records()


def _copy(source: str, destination: str) -> None:
    storage.write_bytes(destination, storage.read_bytes(source))


def _local_chat_client(stack: ExitStack, model_ref: str, max_new_tokens: int, timeout_s: float,
                       max_retries: int) -> ChatClient:
    """Serve `model_ref` (builtin name, folder or gs:// prefix) in-process with `TeacherServer` on 127.0.0.1 for
    the life of `stack`, and a ChatClient that asks it over HTTP one request at a time."""
    from mangadistill.core.teacher_server import LocalChatModel, TeacherServer

    server = stack.enter_context(TeacherServer(
        LocalChatModel(model_ref, device=default_device(), max_new_tokens=max_new_tokens), host=LOCAL_TEACHER_HOST))
    log.info("local model %s serving at %s", server.generator.model, server.base_url)
    return ChatClient(server.base_url, server.generator.model, timeout_s=timeout_s, max_retries=max_retries,
                      concurrency=1)


# --- dataset ---------------------------------------------------------------------------------------------


def run_response_dataset_stage(
    prompts_uri: str, human_corrected_uri: str, refusal_uri: str, prompts_out: str, human_corrected_out: str,
    refusal_out: str, quarantine_out: str, manifest_out: str, scale: float = 1.0, validation_fraction: float = 0.05,
    seed: int = 0, on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """Production prompts (parquet/JSONL, `prompt` column) + human-corrected and refusal/escalation examples
    (`prompt`, `response`) -> PREPARED_PROMPTS (redacted, de-duplicated, split; the only text a teacher sees),
    two RESPONSE_EXAMPLES tables, QUARANTINE and a manifest, in the mixture's proportions times `scale`
    (`dataset.run_response_dataset`). Metrics: redacted_<kind> per PII kind, duplicates, counts."""
    from mangadistill.response.dataset import run_response_dataset

    with tempfile.TemporaryDirectory(prefix="response-dataset-") as folder:
        metrics = run_response_dataset(prompts_uri, human_corrected_uri, refusal_uri, folder, scale=scale,
                                       validation_fraction=validation_fraction, seed=seed, on_bad_rows=on_bad_rows)
        for name, destination in zip(DATASET_FILES, (prompts_out, human_corrected_out, refusal_out, quarantine_out),
                                     strict=True):
            _copy(f"{folder}/{name}.parquet", destination)
        _copy(f"{folder}/manifest.json", manifest_out)
    return loggable(metrics)


# --- teacher labeling ------------------------------------------------------------------------------------


def read_prompts_for_teacher(uri: str, on_bad_rows: str = "quarantine", shard: int = -1):
    """(RESPONSE_PROMPTS table, quarantine, redaction counts) from PREPARED_PROMPTS, RESPONSE_EVAL (eval_id is
    the prompt_id) or any table with prompt_id and prompt; every prompt is redacted here (idempotent on the
    dataset stage's output), so only redacted text can reach a teacher. shard >= 0: `uri` is the folder
    `run_response_shard_prompts` wrote, and the table is its shard `shard`."""
    table = storage.read_table(shard_uri(uri, shard) if shard >= 0 else uri)
    if shard >= 0 and table.num_rows == 0:  # the split gave this shard nothing: nothing to label
        return RESPONSE_PROMPTS.empty_table(), quarantine_table([]), dict.fromkeys(PII_KINDS, 0)
    if "prompt_id" not in table.column_names and "eval_id" in table.column_names:
        table = table.rename_columns(["prompt_id" if name == "eval_id" else name for name in table.column_names])
    validated = validate_table(table, RESPONSE_PROMPTS, source=uri, on_bad_rows=on_bad_rows)
    counts: Counter[str] = Counter(dict.fromkeys(PII_KINDS, 0))
    redacted = []
    for text in validated.table.column("prompt").to_pylist():
        redaction = redact_text(text)
        counts.update(redaction.counts)
        redacted.append(redaction.text)
    table = validated.table
    prompts = table.set_column(table.schema.get_field_index("prompt"), "prompt", pa.array(redacted, pa.string()))
    return prompts, validated.quarantine, dict(counts)


def run_response_teacher_labeling(
    prompts_uri: str, responses_uri: str, quarantine_uri: str, config: ResponseLabelingConfig,
    on_bad_rows: str = "quarantine", shard: int = -1,
) -> dict[str, float]:
    """Prompts -> TEACHER_RESPONSES + QUARANTINE through the OpenAI-compatible chat API, with the response cache
    (`labeling.label_responses`; who answers and how: `labeling.ResponseLabelingConfig`). A local teacher answers
    one request at a time, so its latency per answer is its generation time: the gate prices it by that
    throughput. shard >= 0: label shard `shard` of the folder `run_response_shard_prompts` wrote at
    prompts_uri. A prompt whose answer fails after the client's retries is a quarantine row, never a failed
    stage; only a misconfigured API (401, 403, 404, a spent budget) stops it. Metrics: label_responses'
    counts, teacher_tokens_per_second, redacted_<kind> at this stage.
    """
    from mangadistill.response.labeling import label_responses, load_prompt, load_rubric

    prompts, read_quarantine, redacted = read_prompts_for_teacher(prompts_uri, on_bad_rows, shard)
    if shard >= 0:
        prompts_uri = shard_uri(prompts_uri, shard)
    prompt = load_prompt(config.prompt_uri or None)
    if config.max_new_tokens > 0:
        prompt = replace(prompt, max_tokens=config.max_new_tokens)
    with ExitStack() as stack:
        cache_uri = config.cache_uri
        if not cache_uri or not storage.usable_folder(cache_uri, "a teacher answer cache that outlives the run"):
            cache_uri = stack.enter_context(tempfile.TemporaryDirectory(prefix="response-cache-"))
            log.warning("teacher answers are cached for this run only: a retry asks the teacher again")
        if config.base_url:
            client = ChatClient(config.base_url, config.teacher_model, api_key_env=config.api_key_env,
                                timeout_s=config.timeout_s, max_retries=config.max_retries,
                                concurrency=config.concurrency, prices=PriceTable.load(config.prices_uri or None))
        else:
            client = _local_chat_client(stack, config.teacher_model, prompt.max_tokens, config.timeout_s,
                                        config.max_retries)
        labels = label_responses(prompts, client, ResponseCache(cache_uri), _catalog(config.catalog_uri),
                                 prompt=prompt, rubric=load_rubric(config.rubric_uri or None), source=prompts_uri)
    storage.write_table(labels.rows, responses_uri)
    quarantine = concat_quarantine([read_quarantine, labels.quarantine])
    storage.write_table(quarantine, quarantine_uri)
    completion = sum(labels.rows.column("completion_tokens").to_pylist())
    latency = sum(labels.rows.column("latency_s").to_pylist())
    return loggable({
        **labels.metrics, "quarantined_rows": quarantine.num_rows,
        "teacher_tokens_per_second": completion / latency if latency > 0 else float("nan"),
        "http_retries": client.usage.retries, **{f"redacted_{kind}": n for kind, n in redacted.items()},
        **{f"client_redacted_{kind}": n for kind, n in client.redactions.items()},
        "client_pii_refused": client.usage.refused,
    })


# --- sharded teacher labeling: split, label each shard, merge ------------------------------------------------

SHARD_MANIFEST = "manifest.json"
SHARD_QUARANTINE = "quarantine.parquet"


def shard_uri(folder: str, shard: int) -> str:
    """The prompts table of shard `shard` in the folder `run_response_shard_prompts` wrote."""
    return f"{folder.rstrip('/')}/shard-{shard:05d}.parquet"


def run_response_shard_prompts(prompts_uri: str, shards_uri: str, shards: int,
                               on_bad_rows: str = "quarantine") -> tuple[list[int], dict[str, float]]:
    """Prompts -> `shards` RESPONSE_PROMPTS tables under the folder shards_uri, for one labelling task each.

    The prompts are read, validated and redacted once, as the labelling stage does (`read_prompts_for_teacher`:
    the same quarantine, the same 20% bad-row limit over the whole table), and the good ones are split by a
    stable hash of their prompt_id (`core.sharding`), in input order within a shard. The folder holds
    shard-<i>.parquet, quarantine.parquet (rows refused here) and manifest.json (source, shard count, the
    prompt_ids and source row of each shard), which `run_response_merge_labels` checks the shards against.
    Returns (the shard indices to fan out over, metrics: prompts, shards, rows per shard, redacted_<kind>).
    """
    from mangadistill.core.sharding import split_positions

    if shards < 1:
        raise ValueError(f"labeling_shards must be >= 1, got {shards}")
    prompts, quarantine, redacted = read_prompts_for_teacher(prompts_uri, on_bad_rows)
    total = prompts.num_rows + quarantine.num_rows  # validate_table: one quarantine row per refused row
    refused = set(quarantine.column("row").to_pylist())
    source_rows = [row for row in range(total) if row not in refused]  # validate_table keeps the order
    ids = prompts.column("prompt_id").to_pylist()
    positions = split_positions(ids, shards)
    for shard, rows in enumerate(positions):
        storage.write_table(prompts.take(pa.array(rows, pa.int64())), shard_uri(shards_uri, shard))
    storage.write_table(quarantine, f"{shards_uri.rstrip('/')}/{SHARD_QUARANTINE}")
    manifest = {"source": prompts_uri, "shards": shards, "redacted": redacted,
                "prompt_ids": [[ids[i] for i in rows] for rows in positions],
                "source_rows": [[source_rows[i] for i in rows] for rows in positions]}
    storage.write_text(f"{shards_uri.rstrip('/')}/{SHARD_MANIFEST}", json.dumps(manifest))
    metrics = {"prompts": total, "shards": shards, "quarantined_rows": quarantine.num_rows,
               "largest_shard": max(map(len, positions)), "smallest_shard": min(map(len, positions)),
               **{f"redacted_{kind}": n for kind, n in redacted.items()}}
    return list(range(shards)), loggable(metrics)


def _shard_answers(uri: str) -> pa.Table:
    """A shard's TEACHER_RESPONSES (every row must keep the contract); an empty shard's empty table."""
    table = storage.read_table(uri)
    if table.num_rows == 0:
        return TEACHER_RESPONSES.empty_table()
    return validate_table(table, TEACHER_RESPONSES, source=uri, on_bad_rows="fail").table


MERGED_MAX_METRICS = frozenset({"wall_s"})
"""Shard metrics merged by their maximum (the shards ran side by side); every other number is summed."""


def run_response_merge_labels(
    shards_uri: str, responses_uris: Sequence[str], quarantine_uris: Sequence[str],
    shard_metrics: Sequence[dict[str, float]], responses_out: str, quarantine_out: str,
) -> dict[str, float]:
    """The shards' TEACHER_RESPONSES and QUARANTINE tables (any order) -> one of each, in the input's row
    order, after checking against the split's manifest that every prompt comes back exactly once, answered or
    quarantined (`core.sharding.check_shard_accounting`: a lost, doubled or unknown prompt_id raises
    ShardAccountingError naming them; nothing is written then). Quarantine rows get the source file and its
    row numbers back; the split's own quarantine comes first. Metrics: the shards' metrics summed (wall_s: the
    largest), with the split's redaction counts, quarantined_rows and teacher_tokens_per_second of the merged
    table, and shards.
    """
    from mangadistill.core.sharding import check_shard_accounting

    manifest = json.loads(storage.read_text(f"{shards_uri.rstrip('/')}/{SHARD_MANIFEST}"))
    count = manifest["shards"]
    if not len(responses_uris) == len(quarantine_uris) == count:
        raise ValueError(f"{shards_uri}: {count} shard(s) were split off, but {len(responses_uris)} answer and "
                         f"{len(quarantine_uris)} quarantine table(s) came back")
    answers = [_shard_answers(uri) for uri in responses_uris]
    refusals = [storage.read_table(uri) for uri in quarantine_uris]
    check_shard_accounting(
        [pid for ids in manifest["prompt_ids"] for pid in ids],
        [pid for table in answers for pid in table.column("prompt_id").to_pylist()]
        + [str(pid) for table in refusals for pid in table.column("message_id").to_pylist()], what="prompt")
    position = {pid: row for ids, rows in zip(manifest["prompt_ids"], manifest["source_rows"], strict=True)
                for pid, row in zip(ids, rows, strict=True)}
    merged = pa.concat_tables(answers)
    ids = merged.column("prompt_id").to_pylist()
    merged = merged.take(pa.array(sorted(range(len(ids)), key=lambda i: position[ids[i]]), pa.int64()))
    rows = [dict(row, source=manifest["source"], row=position[row["message_id"]])
            for quarantine in refusals for row in quarantine.to_pylist()]
    split_quarantine = storage.read_table(f"{shards_uri.rstrip('/')}/{SHARD_QUARANTINE}")
    quarantine = concat_quarantine([split_quarantine, quarantine_table(sorted(rows, key=lambda r: r["row"]))])
    storage.write_table(merged, responses_out)
    storage.write_table(quarantine, quarantine_out)
    summed: dict[str, float] = {}
    for metrics in shard_metrics:
        for name, value in metrics.items():
            summed[name] = max(summed.get(name, value), value) if name in MERGED_MAX_METRICS else (
                summed.get(name, 0.0) + value)
    for kind, n in manifest["redacted"].items():
        summed[f"redacted_{kind}"] = summed.get(f"redacted_{kind}", 0.0) + n
    completion = sum(merged.column("completion_tokens").to_pylist())
    latency = sum(merged.column("latency_s").to_pylist())
    return loggable({**summed, "shards": count, "prompts": sum(map(len, manifest["prompt_ids"])),
                     "quarantined_rows": quarantine.num_rows,
                     "teacher_tokens_per_second": completion / latency if latency > 0 else float("nan")})


# --- curation --------------------------------------------------------------------------------------------


def run_response_curation(
    teacher_responses_uri: str, human_corrected_uri: str, refusal_uri: str, train_uri: str, validation_uri: str,
    review_uri: str, manifest_uri: str, quarantine_uri: str, scale: float = 1.0, seed: int = 0,
    validation_fraction: float = 0.05, catalog_uri: str = "", on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """TEACHER_RESPONSES + human-corrected + refusal/escalation (RESPONSE_EXAMPLES) -> the training mixture.

    Teacher answers with an unsupported catalog claim (the fact checker) go to `review_uri`
    (RESPONSE_REVIEW, for a person to correct) and never into training; a human-corrected answer replaces the
    teacher's for the same prompt (`dataset.curate_teacher_responses`). The rest is mixed in the mixture's
    proportions times `scale` and split (`build_training_mixture`): train and validation RESPONSE_EXAMPLES,
    and a manifest of targets, availability and shortfalls per source. catalog_uri: the fact checker's catalog.
    """
    from mangadistill.response.dataset import build_training_mixture, curate_teacher_responses

    teacher = validate_table(storage.read_table(teacher_responses_uri), TEACHER_RESPONSES,
                             source=teacher_responses_uri, on_bad_rows=on_bad_rows)
    human = validate_table(storage.read_table(human_corrected_uri), RESPONSE_EXAMPLES, source=human_corrected_uri,
                           on_bad_rows=on_bad_rows)
    refusal = validate_table(storage.read_table(refusal_uri), RESPONSE_EXAMPLES, source=refusal_uri,
                             on_bad_rows=on_bad_rows)
    quarantine = concat_quarantine([teacher.quarantine, human.quarantine, refusal.quarantine])
    storage.write_table(quarantine, quarantine_uri)
    curation = curate_teacher_responses(teacher.table, human.table, _catalog(catalog_uri))
    storage.write_table(curation.review, review_uri)
    tables, manifest = build_training_mixture(curation.kept, human.table, refusal.table, scale=scale, seed=seed,
                                              validation_fraction=validation_fraction)
    storage.write_table(tables["train"], train_uri)
    storage.write_table(tables["validation"], validation_uri)
    manifest = {**manifest, "curation": curation.metrics, "review_uri": review_uri,
                "quarantine": dict(Counter(quarantine.column("reason").to_pylist()))}
    storage.write_text(manifest_uri, json.dumps(manifest, indent=2, sort_keys=True, default=float))
    split_sources = {f"{split}_{source}": n for split, counts in manifest["splits"].items()
                     for source, n in counts.items()}
    return loggable({
        **curation.metrics, "train_rows": tables["train"].num_rows, "validation_rows": tables["validation"].num_rows,
        **split_sources, "quarantined_rows": quarantine.num_rows,
        **{f"shortfall_{source}": row["shortfall"] for source, row in manifest["sources"].items()},
    })


# --- training --------------------------------------------------------------------------------------------


def run_response_training(
    train_uri: str, output_dir: str, quarantine_uri: str, config: ResponseTrainConfig, kl_teacher_model: str = "",
    checkpoint_dir: str = "", on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """RESPONSE_EXAMPLES -> a LoRA student folder (adapter/, merged/, training_report.json) trained on
    L = β·CE + (1 − β)·T²·KL(teacher ‖ student) (`training.train_response_student`; β < 1 needs
    kl_teacher_model, a local causal LM with the student's tokenizer). checkpoint_dir: step checkpoints a rerun
    resumes from ("": none)."""
    from mangadistill.response.training import train_response_student

    validated = validate_table(storage.read_table(train_uri), RESPONSE_EXAMPLES, source=train_uri,
                               on_bad_rows=on_bad_rows)
    storage.write_table(validated.quarantine, quarantine_uri)
    table = validated.table
    result = train_response_student(
        table.column("prompt").to_pylist(), table.column("response").to_pylist(), output_dir, config,
        teacher_model=kl_teacher_model or None, checkpoint_dir=checkpoint_dir or None,
    )
    losses = result.step_ce or result.step_losses
    sources = Counter(table.column("source").to_pylist())
    return loggable({
        "train_rows": table.num_rows, **{f"train_rows_{source}": n for source, n in sources.items()},
        "steps": result.total_steps, "resumed_from_step": result.resumed_from_step,
        "first_loss": losses[0] if losses else float("nan"), "final_loss": losses[-1] if losses else float("nan"),
        "train_seconds": result.train_seconds, "seconds_per_step": result.seconds_per_step,
        "parameters": result.num_parameters, "trainable_parameters": result.trainable_parameters,
        "rows_truncated": result.rows_truncated, "quarantined_rows": validated.quarantine.num_rows,
    })


# --- quantization ----------------------------------------------------------------------------------------


def student_model_folder(model_dir: str) -> str:
    """The plain transformers folder of a response student: `merged/` of a training output, else the folder."""
    merged = Path(model_dir, "merged")
    return str(merged) if (merged / "config.json").is_file() else model_dir


def run_response_quantization(
    model_dir: str, output_dir: str, eval_uri: str, modes: tuple[str, ...] = ("int8", "nf4"), prompts: int = 4,
    max_new_tokens: int = 32, threads: int = 0, system_prompt: str | None = None,
) -> dict[str, float]:
    """The student (training output or model folder) -> bitsandbytes 8-bit and NF4 folders and
    response_quantization_report.json (`quantization.quantize_response_model`): size, memory and
    greedy tokens per second before and after, measured on the first `prompts` eval prompts on this machine."""
    from mangadistill.response.quantization import quantize_response_model

    eval_rows = validate_table(storage.read_table(eval_uri), RESPONSE_EVAL, source=eval_uri).table
    texts = eval_rows.column("prompt").to_pylist()[:max(1, prompts)]
    report = quantize_response_model(student_model_folder(model_dir), output_dir, texts, modes=modes,
                                     max_new_tokens=max_new_tokens, threads=threads or None,
                                     system_prompt=system_prompt)
    metrics: dict[str, float] = {}
    for name, figures in report["models"].items():
        for figure in ("size_on_disk_mib", "parameter_mib", "tokens_per_second", "greedy_token_agreement"):
            metrics[f"{name}_{figure}"] = figures.get(figure, float("nan"))
    for mode, ratios in report["ratios"].items():
        metrics.update({f"{mode}_{name}_ratio": value for name, value in ratios.items()})
    return loggable(metrics)


# --- evaluation and gate ---------------------------------------------------------------------------------


def measure_gate_throughput(config: ResponseGateConfig, eval_rows: list[dict], student_dir: str,
                            quantized_dir: str) -> SideBySideThroughput:
    """The gate's cost measurement (`gate.measure_side_by_side` on the first config.cost_prompts eval prompts,
    config.cost_max_new_tokens each, config.cost_repeats rounds, on this machine): the served student
    (config.served_variant: baseline, the merged student; int8 / nf4, its bitsandbytes folder under
    quantized_dir) and, with config.teacher_hardware, config.teacher_model, both loaded the way the labelling
    stage serves a local teacher (`LocalChatModel`)."""
    from mangadistill.core.teacher_server import LocalChatModel
    from mangadistill.response.gate import measure_side_by_side
    from mangadistill.response.quantization import QUANT_MODES

    if config.teacher_hardware and (config.teacher_base_url or not config.teacher_model):
        raise ValueError("teacher_hardware prices a teacher measured in this task: it needs teacher_model (a "
                         "builtin name, folder or gs:// prefix) and no teacher_base_url; a teacher behind an API is "
                         "priced by its recorded usage cost (leave teacher_hardware empty)")
    if config.served_variant not in ("baseline", *QUANT_MODES):
        raise ValueError(f"served_variant {config.served_variant!r}: choose baseline or one of {QUANT_MODES}")
    served = (student_model_folder(student_dir) if config.served_variant == "baseline"
              else f"{quantized_dir.rstrip('/')}/{config.served_variant}")
    models = {"student": LocalChatModel(served, device=default_device())}
    if config.teacher_hardware:
        models["teacher"] = LocalChatModel(config.teacher_model, device=default_device())
    throughput = measure_side_by_side(
        {name: (backend.lm, backend.tokenizer) for name, backend in models.items()},
        [row["prompt"] for row in eval_rows[:max(1, config.cost_prompts)]], config.cost_max_new_tokens,
        config.cost_repeats, config.system_prompt)
    log.info("side by side on %s: tokens/s per round %s", throughput.device, dict(throughput.tokens_per_second))
    return throughput


def run_response_gate_check(
    eval_uri: str, teacher_answers_uri: str, student_dir: str, quantized_dir: str, report_uri: str, event_uri: str,
    review_packet_uri: str, review_key_uri: str, answers_dir: str, config: ResponseGateConfig, catalog_uri: str = "",
    event_copy_uri: str = "",
) -> ResponseGateOutcome:
    """Answer the fixed eval set with the student and the base student, measure serving throughput side by
    side, then `gate.run_response_gate` (and a copy of the event at event_copy_uri when given: the exit handler
    reads it).

    The answers and the judge's verdicts go to answers_dir/{student,base_student,judgments}.parquet. The base
    student is config.base_student_model, else the model the student was trained from (its
    adapter/student.json; a layer-cut student is compared with its uncut starting model).

    Cost (`measure_gate_throughput`, in this task, before any judge is loaded): the student's served variant,
    priced at config.student_hardware; with config.teacher_hardware (a self-hosted teacher priced 0 per token,
    as in the demo) config.teacher_model too, measured in turn with the student; without it the teacher is a
    managed API and its recorded usage cost per answer is its side. Judge (both orders): the model
    config.judge_model of the OpenAI-compatible API at config.judge_base_url; with no URL, config.judge_model (a
    builtin name, folder or gs:// prefix) served in-process like a local teacher and always asked with guided
    choice; with neither, only the similarity proxy config.proxy_model is measured and the packaged gate on
    teacher_preference_match fails as missing.
    """
    from mangadistill.core.teacher_server import LocalChatModel
    from mangadistill.response.gate import CachedJudge, answer_eval_prompts, run_response_gate
    from mangadistill.response.training import ADAPTER_DIR, load_student_spec
    from mangadistill.response.training import REPORT_FILE as TRAINING_REPORT

    eval_rows = validate_table(storage.read_table(eval_uri), RESPONSE_EVAL, source=eval_uri).table.to_pylist()
    base_student_model = (config.base_student_model
                          or load_student_spec(Path(student_dir, ADAPTER_DIR))["student_model"])
    student_answers_uri, base_answers_uri, judgments_uri = (f"{answers_dir.rstrip('/')}/{name}.parquet"
                                                            for name in ANSWER_FILES)
    throughput = measure_gate_throughput(config, eval_rows, student_dir, quantized_dir)
    for model_ref, name, answers_uri in ((student_model_folder(student_dir), config.student_name, student_answers_uri),
                                         (base_student_model, "base-student", base_answers_uri)):
        backend = LocalChatModel(model_ref, name=name, device=default_device(), max_new_tokens=config.max_new_tokens)
        answers, bad = answer_eval_prompts(backend, eval_rows, config.system_prompt, max_tokens=config.max_new_tokens)
        if bad.num_rows:
            log.warning("%s: %d eval prompts got no answer: %s", name, bad.num_rows,
                        Counter(bad.column("reason").to_pylist()))
        storage.write_table(answers, answers_uri)
        del backend
    training_report = Path(student_dir, TRAINING_REPORT)
    with ExitStack() as stack:
        judge = None
        if config.judge_base_url:
            judge = ChatClient(config.judge_base_url, config.judge_model, api_key_env=config.judge_api_key_env,
                               structured_api=config.judge_structured_api)
        elif config.judge_model:
            judge = _local_chat_client(stack, config.judge_model, config.max_new_tokens, LOCAL_JUDGE_TIMEOUT_S,
                                       max_retries=1)
            config = replace(config, judge_guided_choice=True)
        if judge is not None and config.judge_cache_uri and storage.usable_folder(
                config.judge_cache_uri, "a judge verdict cache that outlives the run"):
            judge = CachedJudge(judge, ResponseCache(config.judge_cache_uri))
        outcome = run_response_gate(
            eval_uri, student_answers_uri, base_answers_uri, teacher_answers_uri, report_uri, event_uri,
            review_packet_uri, review_key_uri, _catalog(catalog_uri), config, judge=judge,
            judgments_uri=judgments_uri, throughput=throughput,
            training_report_uri=str(training_report) if training_report.is_file() else "",
        )
    if isinstance(judge, CachedJudge):
        log.info("judge verdicts: %d from the cache, %d asked", judge.hits, judge.misses)
    copy_event(event_uri, event_copy_uri)
    return outcome


RESPONSE_CARD = ModelCard(
    task="response", pipeline_tag="text-generation",
    intended_use="Answering MangaAssist shoppers' questions in the store's voice, grounded in the catalog facts "
                 "the prompt carries; escalating to a person where the store's policy says so. Catalog claims "
                 "should still pass `mangadistill check-facts` in production logs.",
    how_to_load="```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\nmodel = "
                "AutoModelForCausalLM.from_pretrained(\"VERSION_FOLDER\")  # the LoRA adapter merged in\n"
                "tokenizer = AutoTokenizer.from_pretrained(\"VERSION_FOLDER\")\n\n"
                "from peft import PeftModel  # or the adapter alone, over its base (adapter/student.json)\n"
                "student = PeftModel.from_pretrained(base_model, \"VERSION_FOLDER/adapter\")\n```",
    limitations="A small model: it can state catalog facts wrongly; the report's hallucination rate and slice "
                "table say how often on the evaluation set.",
)


def run_response_publish(student_dir: str, report_path: str, event_path: str, models_root: str, model_name: str,
                         run_id: str) -> PublishedVersion:
    """The promoted response student as `<models_root>/<model_name>/<run_id>/` (`core.publish.publish_version`):
    the merged causal LM at the top, the LoRA adapter (with student.json: how to rebuild its base) in adapter/."""
    from mangadistill.response.training import ADAPTER_DIR, MERGED_DIR

    layout = {".": str(Path(student_dir, MERGED_DIR)), ADAPTER_DIR: str(Path(student_dir, ADAPTER_DIR))}
    return publish_version(models_root, model_name, run_id, layout, event_path, report_path, RESPONSE_CARD)
