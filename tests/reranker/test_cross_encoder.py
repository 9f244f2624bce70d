"""Cross-encoder reranker: losses, batching, training with resume, scoring, saved-folder formats, int8."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import build_tiny_bert
from mangadistill.core.contracts import validate_table
from mangadistill.core.onnx_int8 import INT8_FILENAME
from mangadistill.reranker.contracts import RERANK_TEACHER_SCORES
from mangadistill.reranker.cross_encoder import (
    SIGMOID_ACTIVATION,
    CrossEncoderScorer,
    OnnxCrossEncoder,
    RerankerTrainConfig,
    bootstrap_teacher,
    quantize_cross_encoder,
    query_grouped_batches,
    sample_candidates,
    sigmoid,
    teacher_score_table,
    train_cross_encoder,
)
from mangadistill.reranker.losses import (
    margin_mse_loss,
    reranker_distillation_loss,
    score_mse_loss,
    supervised_relevance_loss,
)
from mangadistill.sample_data.queries import build_reranker_splits

FAST = RerankerTrainConfig(epochs=1, batch_size=8, learning_rate=1e-3, max_length=64)


@pytest.fixture(scope="module")
def splits() -> dict[str, pa.Table]:
    return build_reranker_splits(seed=2, n_train=6, n_production=6, n_eval=4, k=8)


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory) -> str:
    """An untrained one-logit tiny BERT cross-encoder."""
    return str(build_tiny_bert(tmp_path_factory.mktemp("tiny-reranker"), labels=("relevance",)))


@pytest.fixture(scope="module")
def trained_student(tmp_path_factory, tiny_encoder, splits) -> str:
    out = tmp_path_factory.mktemp("student")
    pairs = [{**row, "teacher_score": 0.9 if row["relevance"] >= 2 else 0.1}
             for row in splits["train_candidates"].to_pylist()]
    train_cross_encoder(pairs, str(tiny_encoder), str(out), FAST, progress=False)
    return str(out)


# --- losses -----------------------------------------------------------------------------------------------

def test_supervised_loss_is_bce_on_sigmoid_and_zero_for_unlabelled_rows():
    logits, targets = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 2 / 3, 0.0])
    loss = supervised_relevance_loss(logits, targets, torch.tensor([True, True, False]))
    s = torch.sigmoid(logits)
    expected = -(targets * torch.log(s) + (1 - targets) * torch.log(1 - s))
    assert torch.allclose(loss[:2], expected[:2]) and loss[2] == 0


def test_score_mse_compares_probabilities_with_teacher_scores():
    loss = score_mse_loss(torch.tensor([0.0, 0.0]), torch.tensor([0.94, 0.5]), torch.tensor([True, False]))
    assert loss.tolist() == pytest.approx([(0.5 - 0.94) ** 2, 0.0])


def test_margin_mse_uses_only_pairs_of_the_same_query():
    logits = torch.tensor([0.0, 1.0, 5.0])
    teacher = torch.tensor([0.2, 0.9, 0.0])
    s = torch.sigmoid(logits)
    loss = margin_mse_loss(logits, teacher, torch.tensor([True, True, True]), torch.tensor([0, 0, 1]))
    assert loss.item() == pytest.approx((((s[0] - s[1]) - (0.2 - 0.9)) ** 2).item())
    alone = margin_mse_loss(logits, teacher, torch.ones(3, dtype=torch.bool), torch.tensor([0, 1, 2]))
    assert alone.item() == 0.0


def test_combined_loss_weights_terms_by_alpha_and_rows_without_label_only_distill():
    logits, targets = torch.tensor([0.3, -0.4]), torch.tensor([1.0, 0.0])
    labelled, scored, teacher = torch.tensor([True, False]), torch.tensor([True, True]), torch.tensor([0.7, 0.2])
    sup = supervised_relevance_loss(logits, targets, labelled)
    mse = score_mse_loss(logits, teacher, scored)
    loss = reranker_distillation_loss(logits, targets, labelled, teacher, scored, alpha=0.25)
    assert loss.item() == pytest.approx(((0.25 * sup + 0.75 * mse).mean()).item())
    assert reranker_distillation_loss(logits, targets, labelled, teacher, scored, 0.0).item() == pytest.approx(
        mse.mean().item())
    with pytest.raises(ValueError, match="alpha"):
        reranker_distillation_loss(logits, targets, labelled, teacher, scored, 1.5)
    with pytest.raises(ValueError, match="group"):
        reranker_distillation_loss(logits, targets, labelled, teacher, scored, 0.5, "margin_mse")


def test_query_grouped_batches_cover_every_row_once_and_split_only_oversized_queries():
    query_ids = ["a"] * 5 + ["b"] * 3 + ["c"] * 12
    batches = query_grouped_batches(query_ids, batch_size=8, seed=0)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(20)) and all(len(b) <= 8 for b in batches)
    batches_with = {q: sum(any(query_ids[i] == q for i in b) for b in batches) for q in "abc"}
    assert batches_with["a"] == 1 and batches_with["b"] == 1 and batches_with["c"] == 2


def test_sample_candidates_keeps_every_grade_per_query(splits):
    table = splits["train_candidates"]
    sampled = sample_candidates(table, per_query=4, seed=0)
    for query_id in set(table["query_id"].to_pylist()):
        grades = [r["relevance"] for r in table.to_pylist() if r["query_id"] == query_id]
        kept = [r["relevance"] for r in sampled.to_pylist() if r["query_id"] == query_id]
        assert len(kept) == min(4, len(grades))
        assert len(set(kept)) == min(4, len(set(grades)))


# --- training, scoring, formats ---------------------------------------------------------------------------

def test_rows_that_contribute_nothing_are_refused(tiny_encoder, tmp_path, splits):
    rows = splits["production_candidates"].to_pylist()[:3]  # no relevance, no teacher score
    with pytest.raises(ValueError, match=r"row 0 .*contributes nothing"):
        train_cross_encoder(rows, str(tiny_encoder), str(tmp_path / "x"), FAST, progress=False)
    bad = [{**rows[0], "teacher_score": float("nan")}]
    with pytest.raises(ValueError, match="not a probability"):
        train_cross_encoder(bad, str(tiny_encoder), str(tmp_path / "x"), FAST, progress=False)


def test_saved_student_loads_with_sentence_transformers_and_transformers_on_the_sigmoid_scale(trained_student):
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = json.loads((Path(trained_student) / "config.json").read_text())
    assert config["sentence_transformers"] == {"activation_fn": SIGMOID_ACTIVATION}
    pairs = [("romance manga with adult cast", "Nana. By Ai Yazawa. Josei (for adult women)."),
             ("horror", "Uzumaki. Seinen. Genres: horror.")]
    ours = CrossEncoderScorer(trained_student).score([q for q, _ in pairs], [d for _, d in pairs])
    st_scores = CrossEncoder(trained_student, device="cpu").predict(pairs)
    tokenizer = AutoTokenizer.from_pretrained(trained_student)
    model = AutoModelForSequenceClassification.from_pretrained(trained_student).eval()
    with torch.inference_mode():
        logits = model(**tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True,
                                   return_tensors="pt")).logits[:, 0].numpy()
    assert np.allclose(ours, st_scores, atol=1e-5) and np.allclose(ours, sigmoid(logits), atol=1e-5)
    assert np.all((ours > 0) & (ours < 1))


def test_scores_come_back_in_input_order_whatever_the_batching(trained_student, splits):
    rows = splits["eval_candidates"].to_pylist()
    queries, texts = [r["query"] for r in rows], [r["candidate_text"] for r in rows]
    scorer = CrossEncoderScorer(trained_student)
    one_by_one = np.array([scorer.score([q], [t])[0] for q, t in zip(queries[:6], texts[:6], strict=True)])
    assert np.allclose(scorer.score(queries[:6], texts[:6], batch_size=4), one_by_one, atol=1e-5)


def test_distillation_moves_student_scores_toward_the_teacher(tiny_encoder, tmp_path, splits):
    """Direction of the objective only (the formulas are checked exactly above): a tiny random encoder trained
    on teacher scores alone (alpha = 0) ends nearer to them than an untrained head's 0.5."""
    rows = splits["train_candidates"].to_pylist()
    teacher = np.array([0.95 if "seinen" in r["candidate_text"].lower() else 0.05 for r in rows])
    pairs = [{**r, "relevance": None, "teacher_score": t} for r, t in zip(rows, teacher, strict=True)]
    config = RerankerTrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, max_length=64, alpha=0.0)
    train_cross_encoder(pairs, str(tiny_encoder), str(tmp_path / "s"), config, progress=False)
    scores = CrossEncoderScorer(str(tmp_path / "s")).score([r["query"] for r in rows],
                                                           [r["candidate_text"] for r in rows])
    assert np.mean((scores - teacher) ** 2) < 0.8 * np.mean((0.5 - teacher) ** 2)


def test_training_resumes_from_the_newest_checkpoint_of_the_same_run(tiny_encoder, tmp_path, splits):
    pairs = splits["train_candidates"].slice(0, 16)
    three = RerankerTrainConfig(**{**FAST.__dict__, "epochs": 3, "distill_loss": "margin_mse"})
    ckpt = tmp_path / "ckpt"
    whole = train_cross_encoder(pairs, str(tiny_encoder), str(tmp_path / "a"), three, str(ckpt), progress=False)
    (run,) = ckpt.iterdir()  # the run's own folder, named by its fingerprint
    assert [p.name for p in run.iterdir()] == ["epoch-3"]
    state = run / "epoch-3" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # killed while writing epoch 3: resume after epoch 2
    resumed = train_cross_encoder(pairs, str(tiny_encoder), str(tmp_path / "b"), three, str(ckpt), progress=False)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 1
    assert resumed.epoch_losses == pytest.approx(whole.epoch_losses)
    expected = CrossEncoderScorer(str(tmp_path / "a")).score(["a query"], ["a candidate"])
    assert CrossEncoderScorer(str(tmp_path / "b")).score(["a query"], ["a candidate"]) == pytest.approx(expected)
    report = json.loads((tmp_path / "b" / "training_report.json").read_text())
    assert report["labelled_pairs"] == 16 and report["teacher_scored_pairs"] == 0


def test_a_checkpoint_of_another_run_is_not_resumed(tiny_encoder, tmp_path, splits):
    ckpt = tmp_path / "ckpt"
    train_cross_encoder(splits["train_candidates"].slice(0, 16), str(tiny_encoder), str(tmp_path / "a"), FAST,
                        str(ckpt), progress=False)
    other = train_cross_encoder(splits["train_candidates"].slice(16, 16), str(tiny_encoder), str(tmp_path / "b"),
                                FAST, str(ckpt), progress=False)
    assert other.resumed_from_epoch == 0 and other.epochs_run == FAST.epochs
    assert len(list(ckpt.iterdir())) == 2  # one folder per run


def test_bootstrap_teacher_trains_on_labels_only(tiny_encoder, tmp_path, splits):
    config = RerankerTrainConfig(**{**FAST.__dict__, "alpha": 0.2})
    bootstrap_teacher(splits["train_candidates"], str(tmp_path / "t"), str(tiny_encoder), config, per_query=3,
                      progress=False)
    report = json.loads((tmp_path / "t" / "training_report.json").read_text())
    assert report["config"]["alpha"] == 1.0
    assert report["pairs"] == 3 * splits["train_queries"].num_rows


def test_teacher_score_table_matches_the_contract(tiny_reranker, splits):
    table = teacher_score_table(CrossEncoderScorer(tiny_reranker), splits["production_candidates"], progress=None)
    validated = validate_table(table, RERANK_TEACHER_SCORES, "teacher_scores")
    assert validated.quarantine.num_rows == 0 and table.num_rows == splits["production_candidates"].num_rows
    row = table.to_pylist()[0]
    assert {"query", "candidate", "teacher_score", "query_id", "sku", "relevance"} <= set(row)
    assert 0.0 <= row["teacher_score"] <= 1.0 and not math.isnan(row["teacher_score"])


def test_int8_export_scores_close_to_fp32(trained_student, tmp_path, splits):
    rows = splits["eval_candidates"].to_pylist()[:12]
    pairs = [(r["query"], r["candidate_text"]) for r in rows]
    report = quantize_cross_encoder(trained_student, str(tmp_path / "int8"), max_length=64, sample_pairs=pairs)
    assert report["size_ratio"] > 1.5 and report["max_abs_score_diff"] < 0.05
    runner = OnnxCrossEncoder(str(tmp_path / "int8" / INT8_FILENAME), str(tmp_path / "int8"), max_length=64)
    scores = runner.score([q for q, _ in pairs], [d for _, d in pairs], batch_size=5)
    assert scores.shape == (12,) and np.all((scores >= 0) & (scores <= 1))
