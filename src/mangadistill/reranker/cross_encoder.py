"""Cross-encoder rerankers: scoring, teacher labeling, training (teacher bootstrap and distilled student), int8.

A cross-encoder reads "query [SEP] candidate_text" and outputs one logit z (transformers
AutoModelForSequenceClassification, num_labels=1). Score scale: s = sigmoid(z), a probability in [0, 1]
that the candidate is relevant; teacher and student scores are both on it, so the distillation MSE compares
like with like.

A saved model folder is a plain transformers folder (config.json, model.safetensors, tokenizer) whose config
also carries `"sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Sigmoid"}`, the key
sentence-transformers (v4+, including 6.2) reads for a CrossEncoder's default activation; so
`sentence_transformers.CrossEncoder(folder).predict(pairs)` returns the same sigmoid scores as `score` here,
and `AutoModelForSequenceClassification.from_pretrained(folder)` returns the logits.

Training objective: `losses.reranker_distillation_loss`. Supervised target (config.supervised_target):
"graded" = relevance / 3 (BCE toward 0, 1/3, 2/3, 1: the grades' order survives in the scores), "binary" =
1 when relevance >= binary_threshold else 0. The loop is `core.training.fit_epochs` (accelerate: one process,
or data-parallel under torchrun / accelerate launch, gradient accumulation; MarginMSE pairs rows within a
micro-batch, so for it the update changes a little with the split). Checkpoints after each epoch and resume
with `mangadistill.core.training`.

Student choice: "minilm-l3" (3 layers, hidden 384, 17.4M parameters) by default. Against the "mpnet-base"
teacher (12 layers, hidden 768, 109.5M) it does about 1/16 of the encoder FLOPs per token, so even with fixed
per-call overheads it clears the 5x CPU latency target with room to spare; "minilm-l6" does about 1/8 and its
margin over 5x is thin once the gap closes in measured latency. See the report for measured figures.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from mangadistill.core.benchmarking import path_size_mb
from mangadistill.core.models import resolve_model
from mangadistill.core.onnx_int8 import INT8_FILENAME, REPORT_FILENAME, cpu_session, export_onnx, quantize_int8
from mangadistill.core.storage import make_readable
from mangadistill.core.training import (
    BaseTrainConfig,
    TrainResult,
    bf16_gpu,
    default_device,
    fit_epochs,
    fresh_accelerator,
    latest_checkpoint,
    length_grouped_batches,
    open_run_checkpoints,
    restore_checkpoint,
    run_fingerprint,
    seed_everything,
)
from mangadistill.reranker.contracts import RELEVANCE_GRADES, RERANK_TEACHER_SCORES
from mangadistill.reranker.losses import DISTILL_LOSSES, reranker_distillation_loss

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 128
"""Query + catalog document is 80-100 word pieces for the sample catalog (MiniLM and MPNet tokenizers)."""
MAX_GRADE = max(RELEVANCE_GRADES)
SIGMOID_ACTIVATION = "torch.nn.modules.activation.Sigmoid"
TEACHER_BASE_MODEL = "mpnet-base"
STUDENT_BASE_MODEL = "minilm-l3"
SUPERVISED_TARGETS = ("graded", "binary")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), computed without overflow."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))


def _check_pairs(queries: Sequence[str], documents: Sequence[str]) -> None:
    if len(queries) != len(documents):
        raise ValueError(f"{len(queries)} queries but {len(documents)} candidate texts")


class CrossEncoderScorer:
    """A one-logit sequence-classification folder; `score` returns sigmoid(logit) per (query, candidate) pair.

    Pairs are tokenized once, sorted by token length and batched so that padding stays small; results come
    back in input order.
    """

    def __init__(self, model_dir: str, max_length: int = DEFAULT_MAX_LENGTH, device: str | None = None):
        self.model_dir, self.max_length, self.device = model_dir, max_length, device or default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(self.device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{model_dir}: a cross-encoder needs num_labels=1, found {self.model.config.num_labels}")

    @torch.inference_mode()
    def logits(self, queries: Sequence[str], documents: Sequence[str], batch_size: int = 32,
               progress: str | None = None) -> np.ndarray:
        """Raw logits, shape (n,)."""
        _check_pairs(queries, documents)
        if not queries:
            return np.zeros(0, dtype=np.float32)
        encoded = self.tokenizer(list(queries), list(documents), truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        out = np.zeros(len(queries), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc=progress, disable=progress is None or len(starts) < 2, unit="batch"):
            idx = order[start : start + batch_size]
            batch = self.tokenizer.pad({key: [encoded[key][i] for i in idx] for key in encoded}, return_tensors="pt")
            out[idx] = self.model(**batch.to(self.device)).logits[:, 0].float().cpu().numpy()
        return out

    def score(self, queries: Sequence[str], documents: Sequence[str], batch_size: int = 32,
              progress: str | None = None) -> np.ndarray:
        """sigmoid(logit) in [0, 1], shape (n,)."""
        return sigmoid(self.logits(queries, documents, batch_size, progress))


class OnnxCrossEncoder:
    """The int8 (or fp32) ONNX export of a cross-encoder on ONNX Runtime's CPU provider; same `score` scale."""

    def __init__(self, onnx_path: str, tokenizer_dir: str, max_length: int = DEFAULT_MAX_LENGTH,
                 threads: int | None = None) -> None:
        self.session = cpu_session(onnx_path, threads)
        self.input_names = [graph_input.name for graph_input in self.session.get_inputs()]
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != 1:
            raise ValueError(f"{onnx_path}: a cross-encoder has one output logit, this graph has {outputs}")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.max_length = max_length

    def logits(self, queries: Sequence[str], documents: Sequence[str], batch_size: int = 32) -> np.ndarray:
        _check_pairs(queries, documents)
        if not queries:
            return np.zeros(0, dtype=np.float32)
        encoded = self.tokenizer(list(queries), list(documents), truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        out = np.zeros(len(queries), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer.pad({key: [encoded[key][i] for i in idx] for key in encoded}, return_tensors="np")
            feeds = {name: batch[name].astype(np.int64) for name in self.input_names}
            out[idx] = self.session.run(None, feeds)[0][:, 0]
        return out

    def score(self, queries: Sequence[str], documents: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return sigmoid(self.logits(queries, documents, batch_size))


def teacher_score_table(scorer: CrossEncoderScorer, candidates: pa.Table, batch_size: int = 32,
                        progress: str | None = "teacher scoring") -> pa.Table:
    """Score every candidate row (RERANK_CANDIDATES columns); return RERANK_TEACHER_SCORES rows: query,
    candidate and teacher_score plus ids, the text scored, and relevance where known."""
    queries = candidates.column("query").to_pylist()
    texts = candidates.column("candidate_text").to_pylist()
    scores = scorer.score(queries, texts, batch_size, progress)
    columns = {name: candidates.column(name) for name in RERANK_TEACHER_SCORES.names if name != "teacher_score"}
    columns["teacher_score"] = pa.array(scores, type=pa.float32())
    return pa.table({name: columns[name] for name in RERANK_TEACHER_SCORES.names}).cast(RERANK_TEACHER_SCORES)


@dataclass
class RerankerTrainConfig(BaseTrainConfig):
    """The cross-encoder's hyper-parameters: alpha weighs the supervised term (1.0: labels only, the teacher
    bootstrap; 0.0: teacher scores only); distill_loss is "mse" or "margin_mse"; supervised_target "graded"
    (relevance / 3) or "binary" (relevance >= binary_threshold)."""

    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 5e-5
    max_length: int = DEFAULT_MAX_LENGTH
    alpha: float = 0.5
    distill_loss: str = "mse"
    supervised_target: str = "graded"
    binary_threshold: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"distill_loss must be one of {DISTILL_LOSSES}, got {self.distill_loss!r}")
        if self.supervised_target not in SUPERVISED_TARGETS:
            raise ValueError(f"supervised_target must be one of {SUPERVISED_TARGETS}, got {self.supervised_target!r}")


@dataclass
class _PairTensors:
    query_ids: list[str]
    targets: torch.Tensor
    labelled: torch.Tensor
    teacher_scores: torch.Tensor
    scored: torch.Tensor
    groups: torch.Tensor


def _rows(pairs: pa.Table | Sequence[dict]) -> list[dict]:
    return pairs.to_pylist() if isinstance(pairs, pa.Table) else list(pairs)


def _pair_tensors(rows: list[dict], config: RerankerTrainConfig) -> _PairTensors:
    """Targets and masks; raises naming the first row that is malformed or would contribute nothing."""
    for i, row in enumerate(rows):
        for key in ("query_id", "query", "candidate_text"):
            if not row.get(key):
                raise ValueError(f"pairs row {i}: missing {key}")
        relevance, teacher = row.get("relevance"), row.get("teacher_score")
        if relevance is not None and relevance not in RELEVANCE_GRADES:
            raise ValueError(f"pairs row {i}: relevance {relevance!r} not one of {RELEVANCE_GRADES}")
        if teacher is not None and not (math.isfinite(teacher) and 0.0 <= teacher <= 1.0):
            raise ValueError(f"pairs row {i}: teacher_score {teacher!r} is not a probability in [0, 1]")
        useful = (relevance is not None and config.alpha > 0) or (teacher is not None and config.alpha < 1)
        if not useful:
            raise ValueError(
                f"pairs row {i} ({row['query_id']}): contributes nothing with alpha={config.alpha} "
                f"(relevance={relevance!r}, teacher_score={teacher!r}); drop or label it first")
    relevance = [row.get("relevance") for row in rows]
    if config.supervised_target == "graded":
        targets = [0.0 if r is None else r / MAX_GRADE for r in relevance]
    else:
        targets = [0.0 if r is None else float(r >= config.binary_threshold) for r in relevance]
    teacher = [row.get("teacher_score") for row in rows]
    query_ids = [row["query_id"] for row in rows]
    group_index = {query_id: g for g, query_id in enumerate(dict.fromkeys(query_ids))}
    return _PairTensors(
        query_ids,
        torch.tensor(targets, dtype=torch.float32),
        torch.tensor([r is not None for r in relevance]),
        torch.tensor([0.0 if t is None else t for t in teacher], dtype=torch.float32),
        torch.tensor([t is not None for t in teacher]),
        torch.tensor([group_index[q] for q in query_ids]),
    )


def query_grouped_batches(query_ids: Sequence[str], batch_size: int, seed: int) -> list[np.ndarray]:
    """Batches that keep a query's rows together (MarginMSE compares rows of one query): queries in random
    order, each query's rows shuffled and cut into pieces of at most batch_size, pieces packed into batches
    of at most batch_size rows, batches shuffled."""
    rng = np.random.default_rng(seed)
    by_query: dict[str, list[int]] = {}
    for row, query_id in enumerate(query_ids):
        by_query.setdefault(query_id, []).append(row)
    batches: list[np.ndarray] = []
    current: list[int] = []
    for q in rng.permutation(len(by_query)):
        rows = rng.permutation(list(by_query.values())[q])
        for start in range(0, len(rows), batch_size):
            piece = rows[start : start + batch_size].tolist()
            if len(current) + len(piece) > batch_size:
                batches.append(np.asarray(current))
                current = []
            current += piece
    if current:
        batches.append(np.asarray(current))
    return [batches[i] for i in rng.permutation(len(batches))]


def _save_cross_encoder(model, tokenizer, out: Path) -> None:
    """Save a folder that loads with transformers and with sentence_transformers.CrossEncoder (sigmoid)."""
    model.config.id2label, model.config.label2id = {0: "relevance"}, {"relevance": 0}
    model.config.sentence_transformers = {"activation_fn": SIGMOID_ACTIVATION}
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    make_readable(out)


def train_cross_encoder(
    pairs: pa.Table | Sequence[dict],
    base_model: str,
    output_dir: str,
    config: RerankerTrainConfig,
    checkpoint_dir: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune `base_model` (any reference `models.resolve_model` takes) into a one-logit cross-encoder.

    pairs: rows with query_id, query, candidate_text and relevance (0-3) and/or teacher_score ([0, 1]), e.g.
    RERANK_CANDIDATES or RERANK_TEACHER_SCORES tables; a row without relevance contributes only the
    distillation term, one without teacher_score only the supervised term. Saves the model, its tokenizer and
    training_report.json to `output_dir`; checkpoints every epoch under `checkpoint_dir` (local or gs://) in this
    run's folder (`core.training.open_run_checkpoints`: config, base model and rows), and resumes from the newest.
    """
    rows = _rows(pairs)
    if not rows:
        raise ValueError("pairs is empty: nothing to train on")
    tensors = _pair_tensors(rows, config)
    seed_everything(config.seed)
    started = time.perf_counter()
    accelerator = fresh_accelerator("bf16" if bf16_gpu() else "no")
    device = accelerator.device
    model_dir = resolve_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=1, ignore_mismatched_sizes=True)
    model.config.problem_type = "regression"
    model.to(device)
    encodings = tokenizer([row["query"] for row in rows], [row["candidate_text"] for row in rows],
                          truncation=True, max_length=config.max_length)
    lengths = [len(ids) for ids in encodings["input_ids"]]

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = len(_epoch_batches(tensors.query_ids, lengths, config, 0))
    total = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)

    start_epoch, losses = 0, []
    fingerprint = run_fingerprint(config, base_model, *([row.get(field) for row in rows] for field in (
        "query_id", "query", "candidate_text", "relevance", "teacher_score")))
    checkpoints = open_run_checkpoints(checkpoint_dir, fingerprint)
    if checkpoints and (latest := latest_checkpoint(checkpoints.path)):
        start_epoch, losses = restore_checkpoint(latest, model, optimizer, scheduler, str(device), fingerprint)

    def batch_loss(trained: torch.nn.Module, rows: np.ndarray) -> torch.Tensor:
        batch = tokenizer.pad({k: [encodings[k][i] for i in rows] for k in encodings}, return_tensors="pt")
        index = torch.as_tensor(rows)
        return reranker_distillation_loss(
            trained(**batch.to(device)).logits[:, 0].float(), tensors.targets[index].to(device),
            tensors.labelled[index].to(device), tensors.teacher_scores[index].to(device),
            tensors.scored[index].to(device), config.alpha, config.distill_loss, tensors.groups[index].to(device))

    losses = fit_epochs(
        model, optimizer, scheduler, accelerator, batch_loss=batch_loss, epochs=config.epochs,
        epoch_batches=lambda epoch: _epoch_batches(tensors.query_ids, lengths, config, epoch),
        max_grad_norm=config.max_grad_norm, accumulation=config.gradient_accumulation_steps,
        start_epoch=start_epoch, losses=losses, checkpoints=checkpoints, fingerprint=fingerprint, progress=progress)

    out = Path(output_dir)
    model.eval().cpu()
    if accelerator.is_main_process:
        _save_cross_encoder(model, tokenizer, out)
    result = TrainResult(
        output_dir=str(out), epochs_run=config.epochs - start_epoch, resumed_from_epoch=start_epoch,
        epoch_losses=losses, train_seconds=time.perf_counter() - started,
        num_parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in params), processes=accelerator.num_processes,
    )
    report = {"config": asdict(config), "base_model": base_model, "pairs": len(rows),
              "labelled_pairs": int(tensors.labelled.sum()), "teacher_scored_pairs": int(tensors.scored.sum()),
              "queries": len(set(tensors.query_ids)), "score": "sigmoid(logit)", **result.as_dict()}
    if accelerator.is_main_process:
        (out / "training_report.json").write_text(json.dumps(report, indent=2))
    accelerator.wait_for_everyone()
    return result


def _epoch_batches(query_ids: list[str], lengths: list[int], config: RerankerTrainConfig,
                   epoch: int) -> list[np.ndarray]:
    if config.distill_loss == "margin_mse":
        return query_grouped_batches(query_ids, config.batch_size, config.seed + epoch)
    return length_grouped_batches(lengths, config.batch_size, config.seed + epoch)


def sample_candidates(candidates: pa.Table, per_query: int, seed: int) -> pa.Table:
    """At most `per_query` rows per query, drawn round-robin over relevance grades (3, 2, 1, 0, then
    unlabelled) so every grade stays represented; row order is kept. Cuts teacher-bootstrap cost."""
    if per_query < 1:
        raise ValueError(f"per_query must be >= 1, got {per_query}")
    rng = np.random.default_rng(seed)
    by_query: dict[str, dict[int, list[int]]] = {}
    for row, (query_id, relevance) in enumerate(zip(candidates.column("query_id").to_pylist(),
                                                    candidates.column("relevance").to_pylist(), strict=True)):
        grade = -1 if relevance is None else relevance
        by_query.setdefault(query_id, {}).setdefault(grade, []).append(row)
    keep: list[int] = []
    for grades in by_query.values():
        pools = [list(rng.permutation(grades[g])) for g in sorted(grades, reverse=True)]
        chosen: list[int] = []
        while len(chosen) < per_query and any(pools):
            for pool in pools:
                if pool and len(chosen) < per_query:
                    chosen.append(int(pool.pop()))
        keep += chosen
    return candidates.take(sorted(keep))


def bootstrap_teacher(
    train_candidates: pa.Table,
    output_dir: str,
    base_model: str = TEACHER_BASE_MODEL,
    config: RerankerTrainConfig | None = None,
    per_query: int | None = None,
    checkpoint_dir: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the demo teacher: fine-tune a real pretrained encoder (default MPNet-base) on the train split's
    graded judgments only (alpha = 1). per_query, when set, samples that many candidates per query
    (`sample_candidates`)."""
    config = config or RerankerTrainConfig(epochs=1, learning_rate=3e-5)
    config = replace(config, alpha=1.0)
    table = train_candidates if per_query is None else sample_candidates(train_candidates, per_query, config.seed)
    return train_cross_encoder(table, base_model, output_dir, config, checkpoint_dir, progress)


def quantize_cross_encoder(model_dir: str, output_dir: str, max_length: int = DEFAULT_MAX_LENGTH,
                           sample_pairs: Sequence[tuple[str, str]] = ()) -> dict:
    """ONNX export (`onnx_int8.export_onnx`, one `logits` output) and dynamic int8 (`quantize_int8`) of a
    cross-encoder; `output_dir` gets model.int8.onnx, the tokenizer, config.json and quantization_report.json.

    Report: sizes in MiB, size_ratio = fp32 ONNX / int8 ONNX, and with `sample_pairs`
    max_abs_score_diff and mean_abs_score_diff between torch fp32 and int8 scores on them.
    """
    os.makedirs(output_dir, exist_ok=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(output_dir)
    shutil.copyfile(os.path.join(model_dir, "config.json"), os.path.join(output_dir, "config.json"))
    int8_path = os.path.join(output_dir, INT8_FILENAME)
    report: dict = {"model_dir": model_dir, "int8_model": INT8_FILENAME, "max_length": max_length,
                    "score": "sigmoid(logit)",
                    "fp32_torch_size_mb": sum(path_size_mb(str(p)) for p in Path(model_dir).glob("*.safetensors"))}
    with tempfile.TemporaryDirectory(prefix="mangadistill-onnx-") as scratch:
        fp32_path = export_onnx(model_dir, os.path.join(scratch, "model.onnx"), max_length=max_length)
        quantize_int8(fp32_path, int8_path)
        report["fp32_onnx_size_mb"] = path_size_mb(fp32_path)
    report["int8_size_mb"] = path_size_mb(int8_path)
    report["size_ratio"] = report["fp32_onnx_size_mb"] / report["int8_size_mb"]
    report["max_abs_score_diff"] = report["mean_abs_score_diff"] = None
    if sample_pairs:
        queries, documents = [q for q, _ in sample_pairs], [d for _, d in sample_pairs]
        fp32 = CrossEncoderScorer(model_dir, max_length, device="cpu").score(queries, documents)
        int8 = OnnxCrossEncoder(int8_path, output_dir, max_length).score(queries, documents)
        report["max_abs_score_diff"] = float(np.abs(fp32 - int8).max())
        report["mean_abs_score_diff"] = float(np.abs(fp32 - int8).mean())
    with open(os.path.join(output_dir, REPORT_FILENAME), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    return report
