import json
import os
import shutil

import numpy as np
import onnx
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from mangadistill.core.benchmarking import path_size_mb
from mangadistill.core.onnx_int8 import INT8_FILENAME, REPORT_FILENAME, export_onnx, quantize_int8
from mangadistill.intent.labels import INTENTS
from mangadistill.intent.quantization import EVAL_FIELDS, OnnxTextClassifier, quantize_classifier

MAX_LENGTH = 16
# Model vocabulary larger than the trained tokenizer's: an embedding-heavy model like a real small BERT.
MODEL_VOCAB = 8000
TEMPLATES = {
    "recommendation": ["can you recommend a manga like {t}", "suggest something similar to {t}"],
    "product_question": ["is {t} volume {n} in english", "how many pages does {t} volume {n} have"],
    "order_tracking": ["where is my order {n} of {t}", "track the package for order {n}"],
    "return_request": ["i want to return {t} volume {n}", "refund my damaged copy of {t}"],
    "checkout_help": ["my card was declined buying {t}", "the payment page fails at checkout {n}"],
    "faq": ["what are your shipping times for {t}", "do you ship box set {n} abroad"],
    "account_security": ["someone logged into my account {n}", "reset my password after {t} order"],
    "escalation": ["let me talk to a human about {t}", "this is unacceptable get a manager {n}"],
}
TITLES = ["one piece", "berserk", "naruto", "monster", "vagabond"]


def make_examples() -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for label, templates in TEMPLATES.items():
        for i, title in enumerate(TITLES):
            for template in templates:
                texts.append(template.format(t=title, n=i + 1))
                labels.append(label)
    return texts, labels


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture(scope="module")
def examples() -> tuple[list[str], list[str]]:
    return make_examples()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, examples) -> str:
    """A 2-layer, hidden-32 BERT classifier over INTENTS, briefly trained so its argmax is meaningful."""
    texts, labels = examples
    tokenizer = train_tokenizer(texts)
    config = BertConfig(
        vocab_size=MODEL_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label=dict(enumerate(INTENTS)),
        label2id={label: i for i, label in enumerate(INTENTS)},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float sums whatever thread count an earlier test left behind
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    targets = torch.tensor([INTENTS.index(label) for label in labels])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        model(**encoded, labels=targets).loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("student")
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def fp32_onnx(model_dir, tmp_path_factory) -> str:
    return export_onnx(model_dir, str(tmp_path_factory.mktemp("onnx") / "model.onnx"), max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def int8_onnx(fp32_onnx) -> str:
    return quantize_int8(fp32_onnx, fp32_onnx.replace("model.onnx", "model.int8.onnx"))


@pytest.fixture(scope="module")
def quantized(model_dir, examples, tmp_path_factory) -> tuple[str, dict, int]:
    """The output folder, the report, and torch's thread count before the call."""
    texts, labels = examples
    output_dir = str(tmp_path_factory.mktemp("quantized"))
    torch_threads = torch.get_num_threads()
    report = quantize_classifier(model_dir, output_dir, texts, labels, max_length=MAX_LENGTH)
    return output_dir, report, torch_threads


def torch_probs(model_dir: str, texts: list[str]) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**encoded).logits, dim=-1).numpy()


def test_export_has_dynamic_axes_and_matches_torch(model_dir, fp32_onnx, examples) -> None:
    graph = onnx.load(fp32_onnx).graph
    for graph_input in graph.input:
        assert [dim.dim_param for dim in graph_input.type.tensor_type.shape.dim] == ["batch", "sequence"]
    # Lengths from 3 tokens to past max_length (truncated), batches of 7 and a last one of 5.
    texts = [*examples[0][:11], "ok", "one piece " * 20]

    onnx_probs = OnnxTextClassifier(fp32_onnx, model_dir, MAX_LENGTH).predict_proba(texts, batch_size=7)

    assert onnx_probs.shape == (len(texts), len(INTENTS))
    np.testing.assert_allclose(onnx_probs, torch_probs(model_dir, texts), atol=1e-5)


def test_int8_quantizes_the_embedding_and_shrinks_the_model(fp32_onnx, int8_onnx) -> None:
    int8_model = onnx.load(int8_onnx)
    float_initializer_sizes = [
        int(np.prod(initializer.dims))
        for initializer in int8_model.graph.initializer
        if initializer.data_type == onnx.TensorProto.FLOAT
    ]
    assert max(float_initializer_sizes) < MODEL_VOCAB * 32 / 10
    assert path_size_mb(fp32_onnx) / path_size_mb(int8_onnx) >= 3


def test_int8_predictions_agree_with_fp32(model_dir, fp32_onnx, int8_onnx, examples) -> None:
    texts = examples[0]
    fp32_probs = OnnxTextClassifier(fp32_onnx, model_dir, MAX_LENGTH).predict_proba(texts)
    int8_probs = OnnxTextClassifier(int8_onnx, model_dir, MAX_LENGTH, threads=1).predict_proba(texts)

    np.testing.assert_allclose(int8_probs.sum(axis=1), 1.0, rtol=1e-5)
    agreement = np.mean(fp32_probs.argmax(axis=1) == int8_probs.argmax(axis=1))
    assert agreement >= 0.8


def test_report_fields_are_consistent(model_dir, quantized, examples) -> None:
    output_dir, report, torch_threads = quantized
    texts, labels = examples

    with open(os.path.join(output_dir, REPORT_FILENAME), encoding="utf-8") as handle:
        assert json.load(handle) == report
    assert report["labels"] == list(INTENTS)
    assert report["threads"] == 1
    assert torch.get_num_threads() == torch_threads
    assert report["fp32_torch_size_mb"] == pytest.approx(
        path_size_mb(os.path.join(model_dir, "model.safetensors"))
    )
    assert report["int8_size_mb"] == pytest.approx(path_size_mb(os.path.join(output_dir, INT8_FILENAME)))
    assert report["size_ratio"] == pytest.approx(report["fp32_onnx_size_mb"] / report["int8_size_mb"])
    assert report["size_ratio"] >= 3
    assert report["latency_n"] == len(texts)
    for runner in ("torch_fp32", "onnx_fp32", "onnx_int8"):
        assert 0 < report[f"{runner}_latency_p50_ms"] <= report[f"{runner}_latency_p95_ms"]
    assert report["onnx_fp32_max_abs_prob_diff"] < 1e-4
    assert report["top1_agreement"] >= 0.8
    label_ids = np.array([INTENTS.index(label) for label in labels])
    expected_fp32 = np.mean(torch_probs(model_dir, texts).argmax(axis=1) == label_ids)
    assert report["accuracy_fp32"] == pytest.approx(expected_fp32)
    assert report["accuracy_delta"] == pytest.approx(report["accuracy_int8"] - report["accuracy_fp32"])


def test_output_dir_alone_runs_the_int8_classifier(quantized, examples, tmp_path) -> None:
    output_dir, report, _ = quantized
    texts, labels = examples
    moved = shutil.copytree(output_dir, tmp_path / "served")
    assert [name for name in os.listdir(moved) if name.endswith(".onnx")] == [INT8_FILENAME]

    classifier = OnnxTextClassifier(str(moved / INT8_FILENAME), str(moved), MAX_LENGTH)
    predicted = [classifier.labels[i] for i in classifier.predict_proba(texts).argmax(axis=1)]

    assert classifier.labels == list(INTENTS)
    assert np.mean([p == label for p, label in zip(predicted, labels, strict=True)]) == pytest.approx(
        report["accuracy_int8"]
    )


def test_report_without_eval_texts_has_sizes_only(model_dir, tmp_path) -> None:
    report = quantize_classifier(model_dir, str(tmp_path / "out"), max_length=MAX_LENGTH)
    assert all(report[field] is None for field in EVAL_FIELDS)
    assert report["size_ratio"] == pytest.approx(report["fp32_onnx_size_mb"] / report["int8_size_mb"])


def test_folder_without_config_or_id2label_is_refused(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        quantize_classifier(str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="no id2label"):
        quantize_classifier(str(tmp_path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_bad_eval_labels_are_refused(model_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"row 1: unknown label 'shipping'"):
        quantize_classifier(model_dir, str(tmp_path), ["a", "b"], ["faq", "shipping"])
    with pytest.raises(ValueError, match="2 rows but eval_texts has 1"):
        quantize_classifier(model_dir, str(tmp_path), ["a"], ["faq", "faq"])


def test_label_count_must_match_the_graph(fp32_onnx, tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "yes", "1": "no"}}))
    with pytest.raises(ValueError, match=r"8 outputs but .* names 2 labels"):
        OnnxTextClassifier(fp32_onnx, str(tmp_path))
