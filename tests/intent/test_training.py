import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, pipeline

from mangadistill.core.training import length_grouped_batches
from mangadistill.intent.training import TrainConfig, train_classifier

LABELS = ("greeting", "complaint")
TEXTS = ["hello there friend", "hi how are you", "good morning to you", "hey hello",
         "this is broken and awful", "terrible service, refund now", "my order arrived damaged", "worst shop ever"]
HARD = ["greeting"] * 4 + ["complaint"] * 4


def _config(**overrides) -> TrainConfig:
    base = dict(epochs=25, batch_size=4, learning_rate=2e-3, beta=1.0, class_weighting="none", warmup_ratio=0.0)
    return TrainConfig(**{**base, **overrides})


def test_trains_a_loadable_classifier_that_fits_its_data(tiny_encoder, tmp_path):
    result = train_classifier(str(tiny_encoder), TEXTS, HARD, LABELS, str(tmp_path / "out"), _config(), progress=False)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    clf = pipeline("text-classification", model=str(tmp_path / "out"), device="cpu")
    predictions = [p["label"] for p in clf(TEXTS)]
    assert np.mean([p == y for p, y in zip(predictions, HARD, strict=True)]) >= 0.75
    report = json.loads((tmp_path / "out" / "training_report.json").read_text())
    assert report["config"]["beta"] == 1.0 and report["epoch_losses"] == result.epoch_losses


def test_soft_labels_pull_the_student_towards_them(tiny_encoder, tmp_path):
    # soft labels say 0.7/0.3 for every row; pure KD (beta=0, T=1) should land near that
    soft = np.tile([0.7, 0.3], (len(TEXTS), 1)).astype(np.float32)
    train_classifier(str(tiny_encoder), TEXTS, HARD, LABELS, str(tmp_path / "kd"),
                     _config(beta=0.0, temperature=1.0, epochs=15), soft_labels=soft, progress=False)
    clf = pipeline("text-classification", model=str(tmp_path / "kd"), device="cpu", top_k=None)
    p_greeting = np.mean([next(s["score"] for s in row if s["label"] == "greeting") for row in clf(TEXTS)])
    assert 0.55 < p_greeting < 0.85


def test_resumes_from_the_newest_checkpoint(tiny_encoder, tmp_path):
    ckpt = tmp_path / "ckpt"
    whole = train_classifier(str(tiny_encoder), TEXTS, HARD, LABELS, str(tmp_path / "a"), _config(epochs=3),
                             checkpoint_dir=str(ckpt), progress=False)
    (run,) = ckpt.iterdir()  # the run's own folder, named by its fingerprint
    assert [p.name for p in run.iterdir()] == ["epoch-3"]
    again = train_classifier(str(tiny_encoder), TEXTS, HARD, LABELS, str(tmp_path / "b"), _config(epochs=3),
                             checkpoint_dir=str(ckpt), progress=False)
    assert again.resumed_from_epoch == 3 and again.epochs_run == 0 and again.epoch_losses == whole.epoch_losses


def test_a_torn_newest_checkpoint_resumes_from_the_one_before_it(tiny_encoder, tmp_path):
    ckpt = tmp_path / "ckpt"
    whole = train_classifier(str(tiny_encoder), TEXTS, HARD, LABELS, str(tmp_path / "a"), _config(epochs=3),
                             checkpoint_dir=str(ckpt), progress=False)
    (run,) = ckpt.iterdir()
    state = run / "epoch-3" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # epoch 3's write torn: the run resumes after epoch 2
    resumed = train_classifier(str(tiny_encoder), TEXTS, HARD, LABELS, str(tmp_path / "b"), _config(epochs=3),
                               checkpoint_dir=str(ckpt), progress=False)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 1
    assert resumed.epoch_losses == pytest.approx(whole.epoch_losses)
    expected = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a").state_dict()
    for name, tensor in AutoModelForSequenceClassification.from_pretrained(tmp_path / "b").state_dict().items():
        torch.testing.assert_close(tensor, expected[name])


def test_a_checkpoint_of_another_run_is_neither_resumed_nor_touched(tiny_encoder, tmp_path):
    ckpt = tmp_path / "ckpt"
    train_classifier(str(tiny_encoder), TEXTS, HARD, LABELS, str(tmp_path / "a"), _config(epochs=2),
                     checkpoint_dir=str(ckpt), progress=False)
    (first,) = ckpt.iterdir()
    first_state = (first / "epoch-2" / "state.pt").read_bytes()
    other_rows = [*TEXTS[:-1], "worst shop ever!!"]
    for texts, config in ((TEXTS, _config(epochs=3)), (other_rows, _config(epochs=2))):
        other = train_classifier(str(tiny_encoder), texts, HARD, LABELS, str(tmp_path / "b"), config,
                                 checkpoint_dir=str(ckpt), progress=False)
        assert other.resumed_from_epoch == 0 and other.epochs_run == config.epochs
    assert len(list(ckpt.iterdir())) == 3  # one folder per run
    assert (first / "epoch-2" / "state.pt").read_bytes() == first_state  # the first run's folder as it was


def test_freezing_layers_leaves_them_untouched(tiny_encoder, tmp_path):
    result = train_classifier(str(tiny_encoder), TEXTS, HARD, LABELS, str(tmp_path / "f"),
                              _config(epochs=1, freeze_layers=1), progress=False)
    assert result.trainable_parameters < result.num_parameters


def test_bad_inputs_raise(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="hard labels not among"):
        train_classifier(str(tiny_encoder), TEXTS, ["nope"] * len(TEXTS), LABELS, str(tmp_path), _config())
    with pytest.raises(ValueError, match="soft labels shape"):
        train_classifier(str(tiny_encoder), TEXTS, HARD, LABELS, str(tmp_path), _config(),
                         soft_labels=np.zeros((2, 2), dtype=np.float32))


def test_length_grouped_batches_cover_every_row_once_and_cut_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000).tolist()
    batches = length_grouped_batches(lengths, batch_size=16, seed=1, group=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert len(batches) == int(np.ceil(1000 / 16))

    def padded(bs):
        return sum(len(b) * max(lengths[i] for i in b) for b in bs)

    random_batches = np.array_split(rng.permutation(1000), len(batches))
    assert padded(batches) < 0.7 * padded(random_batches)
    assert [b.tolist() for b in batches] == [b.tolist() for b in length_grouped_batches(lengths, 16, 1, 10)]
