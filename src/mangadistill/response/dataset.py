"""The response task's dataset stage and curation.

Dataset stage (`prepare_prompts`, `run_response_dataset`): import production prompts (parquet or JSONL, local
or gs://), validate them, redact personal data (redaction.redact_text) BEFORE anything else sees them,
de-duplicate, split, and pick the human-corrected and refusal/escalation examples in the mixture's proportions.

De-duplication is exact after normalisation: `normalise_prompt` (NFKC, case-folded, every run of
non-alphanumeric characters one space, trimmed) is computed on the redacted text, so "Where is my order??"
and "where is my order" are one prompt, and so are two prompts that differ only in an email address. The
first occurrence is kept; later ones go to the quarantine with the kept prompt_id. Paraphrases and typo
variants are not duplicates.

Split: a prompt is "validation" when a hash of (seed, normalised text) falls below `validation_fraction`,
so a prompt and its duplicates always land in the same split and the split does not depend on file order.

Curation (`curate_teacher_responses`, `build_training_mixture`): teacher responses with an unsupported
catalog claim (factcheck) are kept out of training and exported for human review; a human-corrected response
replaces the teacher's for the same prompt (same prompt_id or same normalised prompt). The training mixture
takes each source up to its target, FULL_MIXTURE scaled by one `scale`, and a manifest says per source the
target, what was available and what was selected (shortfalls are reported, never hidden).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.contracts import (
    DataContractError,
    ValidatedTable,
    concat_quarantine,
    quarantine_table,
    validate_table,
)
from mangadistill.core.redaction import PII_KINDS, redact_text
from mangadistill.response.contracts import PREPARED_PROMPTS, RESPONSE_EXAMPLES, RESPONSE_PROMPTS, RESPONSE_REVIEW
from mangadistill.response.factcheck import Catalog, check_responses

FULL_MIXTURE: dict[str, int] = {
    "production_prompts": 25_000,
    "teacher_responses": 25_000,
    "human_corrected": 5_000,
    "refusal_escalation": 2_000,
}
"""The training mixture at scale 1: source -> count. Teacher responses answer the production
prompts one to one; human-corrected and refusal/escalation examples are added to them."""
SPLITS = ("train", "validation")
DUPLICATE_REASON = "duplicate prompt (normalised text)"
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def mixture_targets(scale: float) -> dict[str, int]:
    """FULL_MIXTURE counts times `scale`, rounded; every source gets at least 1 row when scale > 0."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return {source: max(1, round(count * scale)) for source, count in FULL_MIXTURE.items()}


def normalise_prompt(text: str) -> str:
    """NFKC, case-fold, every run of non-alphanumeric characters becomes one space, trimmed."""
    return _NON_ALNUM.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _unit_hash(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(normalised: str, seed: int, validation_fraction: float) -> str:
    """"validation" when sha256(seed, normalised text) as a number in [0, 1) is below the fraction."""
    return "validation" if _unit_hash("split", seed, normalised) < validation_fraction else "train"


def _with_ids(table: pa.Table, id_column: str, prefix: str) -> pa.Table:
    """Add `id_column` as "{prefix}-{row:06d}" when the file has none (rows keep their file order)."""
    if id_column in table.column_names:
        return table
    return table.append_column(id_column, pa.array([f"{prefix}-{row:06d}" for row in range(table.num_rows)]))


def _split_duplicate_ids(validated: ValidatedTable, id_column: str, source: str) -> ValidatedTable:
    """Move rows whose id repeats an earlier row's into the quarantine ("duplicate <id_column>")."""
    ids = validated.table.column(id_column).to_pylist()
    seen: set[str] = set()
    keep, bad = [], []
    for row, value in enumerate(ids):
        if value in seen:
            bad.append({"source": source, "row": row, "message_id": value, "column": id_column,
                        "reason": f"duplicate {id_column}", "value": value})
        keep.append(value not in seen)
        seen.add(value)
    return ValidatedTable(validated.table.filter(pa.array(keep, type=pa.bool_())),
                          concat_quarantine([validated.quarantine, quarantine_table(bad)]))


def read_prompts(uri: str, on_bad_rows: str = "quarantine") -> ValidatedTable:
    """Read production prompts (a `prompt` column; `prompt_id` optional, else "p-{row:06d}") as
    RESPONSE_PROMPTS. A missing `prompt` column or unreadable file raises DataContractError naming the file
    and column; null or empty prompts and repeated prompt_ids go to the quarantine with reasons."""
    table = _with_ids(storage.read_table(uri), "prompt_id", "p")
    validated = validate_table(table, RESPONSE_PROMPTS, source=uri, on_bad_rows=on_bad_rows)
    return _split_duplicate_ids(validated, "prompt_id", uri)


@dataclass(frozen=True)
class PreparedPrompts:
    """Redacted, de-duplicated, split prompts (PREPARED_PROMPTS), the quarantine and the metrics."""

    table: pa.Table
    quarantine: pa.Table
    metrics: dict[str, float]


def prepare_prompts(
    validated: ValidatedTable, source: str, max_prompts: int | None = None, validation_fraction: float = 0.05,
    seed: int = 0,
) -> PreparedPrompts:
    """Redact, de-duplicate, cap at `max_prompts` (a seeded choice among the unique prompts) and split.

    metrics: prompts_read (rows in the file), quarantined_rows and quarantined_<reason>, redacted_<kind> for
    every kind in PII_KINDS (spans replaced), prompts_with_pii, duplicates, unique_prompts, not_selected
    (unique prompts over the cap), prompts, prompts_train, prompts_validation.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    ids = validated.table.column("prompt_id").to_pylist()
    texts = validated.table.column("prompt").to_pylist()
    redacted_counts: Counter[str] = Counter(dict.fromkeys(PII_KINDS, 0))
    first_by_text: dict[str, str] = {}
    rows, duplicates = [], []
    for row, (prompt_id, text) in enumerate(zip(ids, texts, strict=True)):
        redaction = redact_text(text)
        redacted_counts.update(redaction.counts)
        key = normalise_prompt(redaction.text)
        if key in first_by_text:
            duplicates.append({"source": source, "row": row, "message_id": prompt_id, "column": "prompt",
                               "reason": DUPLICATE_REASON, "value": first_by_text[key]})
            continue
        first_by_text[key] = prompt_id
        rows.append({"prompt_id": prompt_id, "prompt": redaction.text,
                     "split": assign_split(key, seed, validation_fraction), "redacted_kinds": redaction.kinds,
                     "_key": key})
    unique = len(rows)
    if max_prompts is not None and unique > max_prompts:
        chosen = sorted(rows, key=lambda r: _unit_hash("select", seed, r["_key"]))[:max_prompts]
        chosen_ids = {r["prompt_id"] for r in chosen}
        rows = [r for r in rows if r["prompt_id"] in chosen_ids]
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "_key"} for r in rows],
                                 schema=PREPARED_PROMPTS)
    quarantine = concat_quarantine([validated.quarantine, quarantine_table(duplicates)])
    reasons = Counter(quarantine.column("reason").to_pylist())
    splits = Counter(r["split"] for r in rows)
    metrics: dict[str, float] = {
        "prompts_read": validated.table.num_rows + validated.quarantine.num_rows,
        "quarantined_rows": quarantine.num_rows,
        **{f"quarantined_{re.sub(r'[^0-9a-z]+', '_', reason.lower()).strip('_')}": n for reason, n in reasons.items()},
        **{f"redacted_{kind}": redacted_counts[kind] for kind in PII_KINDS},
        "prompts_with_pii": sum(bool(r["redacted_kinds"]) for r in rows),
        "duplicates": len(duplicates),
        "unique_prompts": unique,
        "not_selected": unique - len(rows),
        "prompts": len(rows),
        **{f"prompts_{split}": splits[split] for split in SPLITS},
    }
    return PreparedPrompts(table, quarantine, metrics)


def read_examples(uri: str, source: str, on_bad_rows: str = "quarantine") -> ValidatedTable:
    """Read (prompt, response) examples as RESPONSE_EXAMPLES with `source` (RESPONSE_SOURCES) set.

    Needs `prompt` and `response` columns; prompt_id ("{source}-{row:06d}"), provenance (the URI) and category
    (null) are filled in when absent. Prompt and response are redacted (personal data never enters training).
    Empty prompts or responses and repeated prompt_ids go to the quarantine.
    """
    table = _with_ids(storage.read_table(uri), "prompt_id", source)
    for name in ("prompt", "response"):
        if name not in table.column_names:
            raise DataContractError(uri, name, None, f"missing column; found {', '.join(table.column_names)}")
    table = table.drop_columns([c for c in ("source",) if c in table.column_names])
    table = table.append_column("source", pa.array([source] * table.num_rows, type=pa.string()))
    if "provenance" not in table.column_names:
        table = table.append_column("provenance", pa.array([uri] * table.num_rows, type=pa.string()))
    if "category" not in table.column_names:
        table = table.append_column("category", pa.nulls(table.num_rows, type=pa.string()))
    validated = validate_table(table, RESPONSE_EXAMPLES, source=uri, on_bad_rows=on_bad_rows)
    validated = _split_duplicate_ids(validated, "prompt_id", uri)
    redacted = validated.table
    for name in ("prompt", "response"):
        values = [redact_text(text).text for text in redacted.column(name).to_pylist()]
        redacted = redacted.set_column(redacted.schema.get_field_index(name), name, pa.array(values, pa.string()))
    return ValidatedTable(redacted, validated.quarantine)


def select_rows(table: pa.Table, n: int, seed: int, key_column: str = "prompt_id") -> pa.Table:
    """Up to n rows chosen by a seeded hash of `key_column` (stable under file order), in file order."""
    if table.num_rows <= n:
        return table
    keys = table.column(key_column).to_pylist()
    chosen = set(sorted(range(len(keys)), key=lambda i: _unit_hash("select", seed, keys[i]))[:n])
    return table.filter(pa.array([i in chosen for i in range(len(keys))], type=pa.bool_()))


def _manifest_row(target: int, available: int, selected: int) -> dict[str, int]:
    return {"target": target, "available": available, "selected": selected, "shortfall": max(0, target - selected)}


def run_response_dataset(
    prompts_uri: str, human_corrected_uri: str, refusal_uri: str, output_dir: str, scale: float = 1.0,
    validation_fraction: float = 0.05, seed: int = 0, on_bad_rows: str = "quarantine",
) -> dict[str, float]:
    """The dataset stage: prompts, human-corrected and refusal/escalation files -> output_dir with
    prompts.parquet (PREPARED_PROMPTS: what the teacher may see), human_corrected.parquet and
    refusal_escalation.parquet (RESPONSE_EXAMPLES, split column-free; their split comes from `assign_split`),
    quarantine.parquet (all three inputs) and manifest.json (targets from `mixture_targets(scale)`, available
    and selected per source). Returns the metrics of `prepare_prompts` plus per-source counts."""
    targets = mixture_targets(scale)
    prompts = prepare_prompts(read_prompts(prompts_uri, on_bad_rows), prompts_uri,
                              max_prompts=targets["production_prompts"], validation_fraction=validation_fraction,
                              seed=seed)
    human = read_examples(human_corrected_uri, "human_corrected", on_bad_rows)
    refusal = read_examples(refusal_uri, "refusal_escalation", on_bad_rows)
    human_selected = select_rows(human.table, targets["human_corrected"], seed)
    refusal_selected = select_rows(refusal.table, targets["refusal_escalation"], seed)
    out = output_dir.rstrip("/")
    storage.write_table(prompts.table, f"{out}/prompts.parquet")
    storage.write_table(human_selected, f"{out}/human_corrected.parquet")
    storage.write_table(refusal_selected, f"{out}/refusal_escalation.parquet")
    quarantine = concat_quarantine([prompts.quarantine, human.quarantine, refusal.quarantine])
    storage.write_table(quarantine, f"{out}/quarantine.parquet")
    manifest = {
        "scale": scale, "seed": seed, "full_mixture": FULL_MIXTURE,
        "sources": {
            "production_prompts": _manifest_row(targets["production_prompts"], prompts.metrics["unique_prompts"],
                                                prompts.table.num_rows),
            "teacher_responses": _manifest_row(targets["teacher_responses"], 0, 0)
            | {"note": "labelled by the teacher from prompts.parquet; counted in build_training_mixture"},
            "human_corrected": _manifest_row(targets["human_corrected"], human.table.num_rows,
                                             human_selected.num_rows),
            "refusal_escalation": _manifest_row(targets["refusal_escalation"], refusal.table.num_rows,
                                                refusal_selected.num_rows),
        },
        "quarantine": dict(Counter(quarantine.column("reason").to_pylist())),
        "prompt_metrics": prompts.metrics,
    }
    storage.write_text(f"{out}/manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    return {
        **prompts.metrics,
        "human_corrected": human_selected.num_rows, "refusal_escalation": refusal_selected.num_rows,
        "quarantined_rows": quarantine.num_rows,
    }


@dataclass(frozen=True)
class Curation:
    """Teacher responses fit for training (RESPONSE_EXAMPLES, source "teacher"), those held for human review
    (RESPONSE_REVIEW), and the counts."""

    kept: pa.Table
    review: pa.Table
    metrics: dict[str, float]


def _teacher_provenance(row: dict) -> str:
    if row.get("provenance"):
        return str(row["provenance"])
    parts = [str(row[name]) for name in ("model", "prompt_version") if row.get(name)]
    return "teacher:" + "/".join(parts) if parts else "teacher"


def curate_teacher_responses(teacher: pa.Table, human_corrected: pa.Table, catalog: Catalog) -> Curation:
    """Fact-check teacher responses against `catalog` (any table with prompt_id, prompt, response; model and
    prompt_version become the provenance). A teacher row whose prompt has a human-corrected response (same
    prompt_id or same normalised prompt) is replaced by it and not checked; a row with an unsupported claim goes
    to review. metrics: teacher_responses, replaced_by_human, checked, unsupported, kept,
    teacher_hallucination_rate (unsupported / checked) and findings_<kind>."""
    human_ids = set(human_corrected.column("prompt_id").to_pylist())
    human_prompts = {normalise_prompt(p) for p in human_corrected.column("prompt").to_pylist()}
    rows = teacher.to_pylist()
    candidates = [r for r in rows if r["prompt_id"] not in human_ids and normalise_prompt(r["prompt"]) not in
                  human_prompts]
    checked, summary = check_responses([r["response"] for r in candidates], catalog,
                                       [r["prompt_id"] for r in candidates])
    kept, review = [], []
    for row, verdict in zip(candidates, checked.to_pylist(), strict=True):
        provenance = _teacher_provenance(row)
        if verdict["unsupported"]:
            review.append({"prompt_id": row["prompt_id"], "prompt": row["prompt"], "response": row["response"],
                           "provenance": provenance, "findings": verdict["findings"]})
        else:
            kept.append({"prompt_id": row["prompt_id"], "prompt": row["prompt"], "response": row["response"],
                         "source": "teacher", "provenance": provenance, "category": row.get("category")})
    metrics = {
        "teacher_responses": len(rows), "replaced_by_human": len(rows) - len(candidates),
        "checked": len(candidates), "unsupported": len(review), "kept": len(kept),
        "teacher_hallucination_rate": summary["hallucination_rate"],
        **{name: value for name, value in summary.items() if name.startswith("findings_")},
    }
    return Curation(pa.Table.from_pylist(kept, schema=RESPONSE_EXAMPLES),
                    pa.Table.from_pylist(review, schema=RESPONSE_REVIEW), metrics)


def build_training_mixture(
    teacher_kept: pa.Table, human_corrected: pa.Table, refusal_escalation: pa.Table, scale: float = 1.0,
    seed: int = 0, validation_fraction: float = 0.05,
) -> tuple[dict[str, pa.Table], dict]:
    """The training mixture in its proportions (FULL_MIXTURE): each source (RESPONSE_EXAMPLES) up to its
    `mixture_targets(scale)` count, split by `assign_split` on the normalised prompt, shuffled by seed.

    Returns ({"train": table, "validation": table}, manifest) where manifest["sources"][source] has target,
    available, selected and shortfall, and production_prompts counts the distinct prompts behind the
    selected teacher responses.
    """
    targets = mixture_targets(scale)
    parts = {
        "teacher_responses": select_rows(teacher_kept, targets["teacher_responses"], seed),
        "human_corrected": select_rows(human_corrected, targets["human_corrected"], seed),
        "refusal_escalation": select_rows(refusal_escalation, targets["refusal_escalation"], seed),
    }
    available = {"teacher_responses": teacher_kept.num_rows, "human_corrected": human_corrected.num_rows,
                 "refusal_escalation": refusal_escalation.num_rows}
    teacher_prompts = len(set(parts["teacher_responses"].column("prompt_id").to_pylist()))
    sources = {"production_prompts": _manifest_row(targets["production_prompts"], teacher_kept.num_rows,
                                                   teacher_prompts)}
    sources |= {name: _manifest_row(targets[name], available[name], table.num_rows) for name, table in parts.items()}
    rows = [r for table in parts.values() for r in table.cast(RESPONSE_EXAMPLES).to_pylist()]
    rows.sort(key=lambda r: _unit_hash("order", seed, r["source"], r["prompt_id"]))
    split_rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for r in rows:
        split_rows[assign_split(normalise_prompt(r["prompt"]), seed, validation_fraction)].append(r)
    tables = {split: pa.Table.from_pylist(split_rows[split], schema=RESPONSE_EXAMPLES) for split in SPLITS}
    manifest = {
        "scale": scale, "seed": seed, "sources": sources,
        "splits": {split: dict(Counter(r["source"] for r in split_rows[split])) for split in SPLITS},
        "rows": len(rows),
    }
    return tables, manifest
