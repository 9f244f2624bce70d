"""Teacher labelling for responses: a retrieval-grounded prompt, a strict rubric, a cache, a quarantine.

For each production prompt (prompt_id, prompt):
1. retrieve the top `retrieval_k` catalog records for the prompt text (`mangadistill.core.retrieval.CatalogIndex`,
   BM25) and render them as JSON lines with the prompt file's `catalog_fields`;
2. render the chat messages from the versioned prompt file (resources/response_prompt.yaml) and rubric
   (resources/answer_rubric.yaml): the rubric goes into the system turn; the records and the customer's text go
   into the user turn between <catalog> and <customer_message> tags, as data. Inside the data, anything that
   looks like one of those tags is defused (`<` becomes `‹`), so the text can never close its block;
3. key = `response_cache.cache_key(model, prompt_version, messages, params)`; a cached answer is used as is
   (an entry with a bad field is a miss, counted in metrics["cache_rejected"]: `cache.entry_problem`),
   otherwise the backend is asked (`concurrency` requests at a time) and the answer is written to the cache
   before it counts, so a killed run loses at most the answers in flight and a rerun never pays twice.

prompt_version = "{prompt file version}+{rubric version}". A prompt whose answer failed after every retry, or
whose text is empty or whose prompt_id repeats, goes to the quarantine (contracts.QUARANTINE) with the reason.
A fatal API error (401, 403, 404) stops the run; everything answered before it is already in the cache.

Row fields: contracts.TEACHER_RESPONSES. For a cached row, tokens, cost and latency are those recorded when the
teacher produced the answer (the teacher's cost, which the cost gate compares against), and cached is true.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from string import Formatter
from typing import Any, Protocol

import pyarrow as pa
import yaml
from tqdm.auto import tqdm

from mangadistill.core import storage
from mangadistill.core.chat_api import DEFAULT_API_KEY_ENV, ChatAPIFatalError, ChatCallFailed, ChatResult
from mangadistill.core.contracts import DataContractError, quarantine_table
from mangadistill.core.retrieval import CatalogIndex
from mangadistill.response.cache import ResponseCache, cache_key
from mangadistill.response.contracts import TEACHER_RESPONSES

logger = logging.getLogger(__name__)

DATA_TAGS = ("catalog", "customer_message")
_TAG_LOOKALIKE = re.compile(r"<(\s*/?\s*(?:" + "|".join(DATA_TAGS) + r")\b)", re.IGNORECASE)
_SYSTEM_FIELDS = {"rubric_version", "rubric"}
_USER_FIELDS = {"catalog", "customer_message"}


class TeacherBackend(Protocol):
    """What labelling needs from a teacher: ChatClient (HTTP) and teacher_server.LocalChatModel fit."""

    model: str
    concurrency: int

    def complete(self, messages: Sequence[dict[str, str]], temperature: float = 0.0, max_tokens: int = 256,
                 label: str = "request") -> ChatResult: ...


@dataclass(frozen=True)
class AnswerRubric:
    version: str
    rules: tuple[tuple[str, str], ...]
    """(id, text) pairs, in order."""

    def render(self) -> str:
        """"1. [id] text" per rule, one a line."""
        return "\n".join(f"{number}. [{rule_id}] {text}" for number, (rule_id, text) in enumerate(self.rules, 1))


@dataclass(frozen=True)
class ResponsePrompt:
    version: str
    system: str
    user: str
    retrieval_k: int
    catalog_fields: tuple[str, ...]
    max_tokens: int
    temperature: float


@dataclass(frozen=True)
class ResponseLabelingConfig:
    """Who answers the prompts and how, built once by the labelling stage's caller.

    base_url set: the OpenAI-compatible teacher API at that URL, `teacher_model` its model name, priced from
    the price table prices_uri ("": packaged), its key read from the environment variable api_key_env,
    `concurrency` requests in flight. base_url empty: `teacher_model` (a builtin name, folder or gs:// prefix)
    served in-process and asked over HTTP one request at a time. cache_uri: a folder or gs:// prefix that
    outlives the run ("": a cache for this run only). max_new_tokens > 0 overrides the prompt file's max_tokens
    (part of every cache key). prompt_uri, rubric_uri: the prompt and rubric YAML ("": packaged); catalog_uri:
    the catalog JSONL retrieved into each prompt ("": the caller's default).
    """

    teacher_model: str
    base_url: str = ""
    api_key_env: str = DEFAULT_API_KEY_ENV
    cache_uri: str = ""
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 4
    max_new_tokens: int = 0
    prompt_uri: str = ""
    rubric_uri: str = ""
    prices_uri: str = ""
    catalog_uri: str = ""


def _load_yaml(uri: str | None, default_name: str) -> tuple[dict[str, Any], str]:
    text, uri = storage.read_text_or_resource(uri, default_name)
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not document.get("version"):
        raise ValueError(f"{uri}: expected a mapping with a 'version'")
    return document, uri


def load_rubric(uri: str | None = None) -> AnswerRubric:
    """The rubric file at `uri` (local or gs://), default resources/answer_rubric.yaml."""
    document, source = _load_yaml(uri, "answer_rubric.yaml")
    rules = document.get("rules")
    if not isinstance(rules, list) or not rules:
        raise ValueError(f"{source}: 'rules' must be a non-empty list")
    parsed = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict) or not str(rule.get("id", "")).strip() or not str(rule.get("text", "")).strip():
            raise ValueError(f"{source}: rule {index} needs a non-empty 'id' and 'text'")
        parsed.append((str(rule["id"]), " ".join(str(rule["text"]).split())))
    return AnswerRubric(str(document["version"]), tuple(parsed))


def load_prompt(uri: str | None = None) -> ResponsePrompt:
    """The prompt file at `uri` (local or gs://), default resources/response_prompt.yaml.

    Raises ValueError when a template's placeholders are not exactly the ones documented in the file.
    """
    document, source = _load_yaml(uri, "response_prompt.yaml")
    for name, expected in (("system", _SYSTEM_FIELDS), ("user", _USER_FIELDS)):
        template = document.get(name)
        if not isinstance(template, str):
            raise ValueError(f"{source}: '{name}' must be a text template")
        found = {field for _, field, _, _ in Formatter().parse(template) if field is not None}
        if found != expected:
            raise ValueError(
                f"{source}: the {name} template needs placeholders {sorted(expected)}, has {sorted(found)}"
            )
    try:
        prompt = ResponsePrompt(
            version=str(document["version"]),
            system=document["system"],
            user=document["user"],
            retrieval_k=int(document["retrieval_k"]),
            catalog_fields=tuple(str(name) for name in document["catalog_fields"]),
            max_tokens=int(document["max_tokens"]),
            temperature=float(document["temperature"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{source}: missing or malformed setting: {error}") from None
    if prompt.retrieval_k < 1 or prompt.max_tokens < 1 or not prompt.catalog_fields:
        raise ValueError(f"{source}: need retrieval_k >= 1, max_tokens >= 1 and at least one catalog field")
    return prompt


def defuse_tags(text: str) -> str:
    """`text` with every opening or closing <catalog>/<customer_message> look-alike turned into ‹...>."""
    return _TAG_LOOKALIKE.sub(r"‹\1", text)


def render_catalog(records: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    """One JSON object per record with `fields` in order (tags in values defused); "(none)" when empty."""
    if not records:
        return "(no matching records)"
    lines = [json.dumps({name: record[name] for name in fields}, ensure_ascii=False) for record in records]
    return defuse_tags("\n".join(lines))


def render_messages(customer_text: str, records: Sequence[dict[str, Any]], prompt: ResponsePrompt,
                    rubric: AnswerRubric) -> list[dict[str, str]]:
    """The system turn (rubric inside) and the user turn (records and customer text as delimited data)."""
    system = prompt.system.format(rubric_version=rubric.version, rubric=rubric.render())
    user = prompt.user.format(catalog=render_catalog(records, prompt.catalog_fields),
                              customer_message=defuse_tags(customer_text))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@dataclass
class ResponseLabels:
    rows: pa.Table
    """TEACHER_RESPONSES rows, in input order."""
    quarantine: pa.Table
    """QUARANTINE rows: prompts without an answer, with the reason."""
    metrics: dict[str, Any]


def _prompt_rows(prompts: pa.Table | Sequence[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    table = prompts if isinstance(prompts, pa.Table) else pa.Table.from_pylist(list(prompts))
    for column in ("prompt_id", "prompt"):
        if column not in table.column_names:
            raise DataContractError(source, column, None, f"missing column; the table has {table.column_names}")
    return table.select(["prompt_id", "prompt"]).to_pylist()


def label_responses(
    prompts: pa.Table | Sequence[dict[str, Any]],
    backend: TeacherBackend,
    cache: ResponseCache,
    catalog_records: Sequence[dict[str, Any]],
    prompt: ResponsePrompt | None = None,
    rubric: AnswerRubric | None = None,
    concurrency: int | None = None,
    source: str = "prompts",
) -> ResponseLabels:
    """Label every prompt as the module docstring says; `concurrency` defaults to the backend's.

    metrics: prompts, labelled, cache_hits, cache_rejected (entries refused and asked again), teacher_calls
    (answers paid for in this run), failures (quarantined after retries), quarantined, prompt_tokens /
    completion_tokens / cost_usd spent in this run, recorded_cost_usd (the teacher's cost of every labelled
    row, cached or not), wall_s, prompt_version, model.
    """
    prompt = prompt or load_prompt()
    rubric = rubric or load_rubric()
    prompt_version = f"{prompt.version}+{rubric.version}"
    params = {"temperature": prompt.temperature, "max_tokens": prompt.max_tokens}
    index = CatalogIndex.from_records(catalog_records)
    by_sku = {str(record["sku"]): record for record in catalog_records}
    started = time.monotonic()

    quarantine: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    seen: set[str] = set()
    items = _prompt_rows(prompts, source)
    for row, item in enumerate(items):
        prompt_id, text = item["prompt_id"], item["prompt"]
        problem = None
        if prompt_id is None or not str(prompt_id).strip():
            problem = ("prompt_id", "empty prompt_id")
        elif str(prompt_id) in seen:
            problem = ("prompt_id", "duplicate prompt_id")
        elif text is None or not str(text).strip():
            problem = ("prompt", "empty prompt")
        if problem is not None:
            message_id = None if prompt_id is None else str(prompt_id)
            quarantine.append({"source": source, "row": row, "message_id": message_id,
                               "column": problem[0], "reason": problem[1], "value": text})
            continue
        seen.add(str(prompt_id))
        skus = [sku for sku, _ in index.search(text, prompt.retrieval_k)]
        messages = render_messages(text, [by_sku[sku] for sku in skus], prompt, rubric)
        requests.append({"row": row, "prompt_id": str(prompt_id), "prompt": text, "retrieved_skus": skus,
                         "messages": messages, "cache_key": cache_key(backend.model, prompt_version, messages, params)})

    answered: dict[int, dict[str, Any]] = {}
    misses: list[dict[str, Any]] = []
    rejected_before = cache.rejected
    for request in requests:
        entry = cache.get(request["cache_key"])
        if entry is None:
            misses.append(request)
        else:
            answered[request["row"]] = _row(request, entry, backend.model, prompt_version, cached=True)
    spent = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    failures = 0

    def ask(request: dict[str, Any]) -> dict[str, Any]:
        result = backend.complete(request["messages"], temperature=prompt.temperature, max_tokens=prompt.max_tokens,
                                  label=f"prompt {request['prompt_id']}")
        entry = {"content": result.content, "model": result.model, "prompt_version": prompt_version,
                 "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                 "cost_usd": result.cost_usd, "latency_s": result.latency_s, "attempts": result.attempts,
                 "finish_reason": result.finish_reason, "params": params}
        cache.put(request["cache_key"], entry)
        return entry

    workers = max(1, concurrency or backend.concurrency)
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(misses), desc="teacher labelling", unit="prompt", disable=None
    ) as progress:
        futures = {pool.submit(ask, request): request for request in misses}
        for future in as_completed(futures):
            request = futures[future]
            progress.update(1)
            try:
                entry = future.result()
            except ChatAPIFatalError:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            except ChatCallFailed as error:
                failures += 1
                spent["prompt_tokens"] += error.usage.get("prompt_tokens", 0)
                spent["completion_tokens"] += error.usage.get("completion_tokens", 0)
                quarantine.append({"source": source, "row": request["row"], "message_id": request["prompt_id"],
                                   "column": "response", "reason": f"teacher failed after {error.attempts} "
                                   f"attempt(s): {error.reason}", "value": request["prompt"]})
                continue
            for key in ("prompt_tokens", "completion_tokens", "cost_usd"):
                spent[key] += entry[key]
            answered[request["row"]] = _row(request, entry, backend.model, prompt_version, cached=False)

    rows = [answered[row] for row in sorted(answered)]
    quarantine.sort(key=lambda item: item["row"])
    metrics = {
        "prompts": len(items),
        "labelled": len(rows),
        "cache_hits": len(requests) - len(misses),
        "cache_rejected": cache.rejected - rejected_before,
        "teacher_calls": len(misses) - failures,
        "failures": failures,
        "quarantined": len(quarantine),
        "prompt_tokens": spent["prompt_tokens"],
        "completion_tokens": spent["completion_tokens"],
        "cost_usd": spent["cost_usd"],
        "recorded_cost_usd": sum(row["cost_usd"] for row in rows),
        "wall_s": time.monotonic() - started,
        "prompt_version": prompt_version,
        "model": backend.model,
    }
    logger.info("teacher labelling: %s", metrics)
    return ResponseLabels(pa.Table.from_pylist(rows, schema=TEACHER_RESPONSES), quarantine_table(quarantine), metrics)


def _row(request: dict[str, Any], entry: dict[str, Any], model: str, prompt_version: str, cached: bool) -> dict:
    return {
        "prompt_id": request["prompt_id"],
        "prompt": request["prompt"],
        "response": entry["content"],
        "model": entry.get("model", model),
        "prompt_version": prompt_version,
        "retrieved_skus": request["retrieved_skus"],
        "prompt_tokens": entry["prompt_tokens"],
        "completion_tokens": entry["completion_tokens"],
        "cost_usd": float(entry["cost_usd"]),
        "cached": cached,
        "latency_s": float(entry["latency_s"]),
        "cache_key": request["cache_key"],
    }
