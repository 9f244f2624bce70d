"""The response student's trainer on tiny llama models built from configs, with a ChatML tokenizer trained here."""

import json
from pathlib import Path

import pytest
import torch
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from mangadistill.core.benchmarking import torch_threads
from mangadistill.core.training import latest_checkpoint
from mangadistill.response.training import (
    IGNORE_INDEX,
    ResponseTrainConfig,
    TokenizerMismatchError,
    cut_layers,
    encode_rows,
    kept_layer_indices,
    load_adapter_merged,
    response_distillation_loss,
    response_window,
    train_response_student,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; several threads stall on shared cores."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_chat_tokenizer(PROMPTS + RESPONSES + ["system user assistant MangaAssist"], vocab_size=400)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory, tokenizer) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-lm"), tokenizer)


def _config(student: Path, **overrides) -> ResponseTrainConfig:
    base = dict(student_model=str(student), max_steps=4, batch_size=3, learning_rate=5e-3, warmup_ratio=0.0,
                max_length=64, lora_r=4, lora_alpha=8, lora_dropout=0.1, checkpoint_every=2)
    return ResponseTrainConfig(**{**base, **overrides})


def _weights(folder: str) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_only_response_tokens_are_targets(tokenizer):
    rows = encode_rows(tokenizer, PROMPTS[:2], RESPONSES[:2], max_length=128)
    for ids, labels, response in zip(rows.input_ids, rows.labels, RESPONSES[:2], strict=True):
        targets = [t for t in labels if t != IGNORE_INDEX]
        assert tokenizer.decode(targets) == response + "<|im_end|>\n"
        first = labels.index(targets[0])
        assert labels[:first] == [IGNORE_INDEX] * first and labels[first:] == ids[first:]
        assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def test_truncation_is_counted_and_prompt_only_rows_are_listed(tokenizer):
    prompts, responses = [PROMPTS[0], " ".join(PROMPTS * 5)], RESPONSES[:2]
    whole = encode_rows(tokenizer, prompts, responses, max_length=1000)
    first_prompt_tokens = whole.labels[0].count(IGNORE_INDEX)
    limit = first_prompt_tokens + 2  # row 0 keeps two response tokens, row 1's prompt alone is longer
    assert whole.labels[1].count(IGNORE_INDEX) > limit
    rows = encode_rows(tokenizer, prompts, responses, max_length=limit)
    assert rows.rows_truncated == 2 and rows.rows_without_response_tokens == [1]
    assert [len(ids) for ids in rows.input_ids] == [limit, limit]
    assert rows.labels[0][first_prompt_tokens:] == whole.labels[0][first_prompt_tokens:limit]


def test_loss_reads_only_response_positions_and_kl_vanishes_for_the_teacher_itself():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 3:] = torch.tensor([1, 2, 3])
    labels[1, 4:] = torch.tensor([4, 5])
    loss, ce, kl = response_distillation_loss(logits, labels, logits.clone(), beta=0.3, temperature=2.0)
    assert kl.abs().item() < 1e-6 and loss.item() == pytest.approx(0.3 * ce.item(), rel=1e-5)
    # position p predicts labels[p + 1]: positions 0, 1 (row 0) and 0-2 (row 1) are never read
    changed = logits.clone()
    changed[0, :2] = torch.randn(2, 11)
    changed[1, :3] = torch.randn(3, 11)
    assert response_distillation_loss(changed, labels, None, 1.0, 1.0)[0].item() == pytest.approx(ce.item())
    changed[0, 2] = torch.randn(11)
    assert response_distillation_loss(changed, labels, None, 1.0, 1.0)[0].item() != pytest.approx(ce.item())
    # the logits the trainer keeps (logits_to_keep = response_window) give the same loss
    window = response_window(labels)
    assert window == 4
    windowed = response_distillation_loss(changed[:, -window:], labels[:, -window:], None, 1.0, 1.0)[0]
    assert windowed.item() == pytest.approx(response_distillation_loss(changed, labels, None, 1.0, 1.0)[0].item())
    teacher = logits.clone()
    teacher[0, 2] = torch.randn(11)
    assert response_distillation_loss(logits, labels, teacher, 0.0, 2.0)[2].item() > 1e-3


def test_trains_and_writes_an_adapter_and_a_merged_model(tiny_lm, tmp_path):
    out = tmp_path / "out"
    result = train_response_student(PROMPTS, RESPONSES, str(out), _config(tiny_lm, max_steps=24, lora_dropout=0.0),
                                    progress=False)
    assert result.steps_run == 24 and result.rows == len(PROMPTS)
    assert sum(result.step_losses[-4:]) < sum(result.step_losses[:4])
    assert 0 < result.trainable_parameters < result.num_parameters
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.merged_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    generated = merged.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    rebuilt = load_adapter_merged(result.adapter_dir).state_dict()
    for name, tensor in merged.state_dict().items():
        torch.testing.assert_close(rebuilt[name], tensor)
    report = json.loads((out / "training_report.json").read_text())
    assert report["step_losses"] == result.step_losses and report["config"]["lora_r"] == 4


def test_resume_after_a_kill_ends_with_the_uninterrupted_weights(tiny_lm, tmp_path):
    config = _config(tiny_lm, max_steps=6)
    whole = train_response_student(PROMPTS, RESPONSES, str(tmp_path / "whole"), config,
                                   checkpoint_dir=str(tmp_path / "ckpt-whole"), progress=False)

    class Killed(Exception):
        pass

    def kill_at_step_5(step: int, loss: float) -> None:
        if step == 5:
            raise Killed

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        train_response_student(PROMPTS, RESPONSES, str(tmp_path / "resumed"), config, checkpoint_dir=str(ckpt),
                               progress=False, on_step=kill_at_step_5)
    (run,) = ckpt.iterdir()  # the run's own folder, named by its fingerprint
    assert latest_checkpoint(run, prefix="step").name == "step-4"
    (run / ".step-6.tmp").mkdir()  # a half-written checkpoint from the kill is ignored
    resumed = train_response_student(PROMPTS, RESPONSES, str(tmp_path / "resumed"), config,
                                     checkpoint_dir=str(ckpt), progress=False)
    assert resumed.resumed_from_step == 4 and resumed.steps_run == 2
    assert resumed.step_losses == pytest.approx(whole.step_losses)
    expected = _weights(whole.merged_dir)
    for name, tensor in _weights(resumed.merged_dir).items():
        torch.testing.assert_close(tensor, expected[name])
    other = train_response_student(PROMPTS, RESPONSES, str(tmp_path / "other"),
                                   _config(tiny_lm, max_steps=2, seed=99), checkpoint_dir=str(ckpt), progress=False)
    assert other.resumed_from_step == 0 and len(list(ckpt.iterdir())) == 2  # another run: its own folder


def test_gradient_checkpointing_gives_the_same_training(tiny_lm, tmp_path):
    plain = train_response_student(PROMPTS, RESPONSES, str(tmp_path / "plain"), _config(tiny_lm, max_steps=2),
                                   progress=False)
    checkpointed = train_response_student(PROMPTS, RESPONSES, str(tmp_path / "gc"),
                                          _config(tiny_lm, max_steps=2, gradient_checkpointing=True), progress=False)
    assert checkpointed.step_losses == pytest.approx(plain.step_losses, rel=1e-5)
    expected = _weights(plain.merged_dir)
    for name, tensor in _weights(checkpointed.merged_dir).items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-5)


def test_kl_term_is_zero_against_the_student_itself_then_grows(tiny_lm, tmp_path):
    result = train_response_student(PROMPTS, RESPONSES, str(tmp_path / "kd"),
                                    _config(tiny_lm, beta=0.5, lora_dropout=0.0), teacher_model=str(tiny_lm),
                                    progress=False)
    # LoRA starts as the identity (B = 0), so the untouched student is its teacher at step 1
    assert len(result.step_kl) == 4 and abs(result.step_kl[0]) < 1e-6 and result.step_kl[-1] > 1e-6
    assert result.step_losses[0] == pytest.approx(0.5 * result.step_ce[0], rel=1e-5)


def test_bf16_mixed_precision_runs_after_a_float32_run(tiny_lm, tmp_path):
    # the GPU check's setting (bf16 autocast, KL teacher, gradient checkpointing), here on the CPU
    config = _config(tiny_lm, max_steps=2, beta=0.5, mixed_precision="bf16", gradient_checkpointing=True)
    result = train_response_student(PROMPTS, RESPONSES, str(tmp_path / "bf16"), config, teacher_model=str(tiny_lm),
                                    progress=False)
    assert len(result.step_kl) == 2 and all(loss == loss for loss in result.step_losses)
    assert AutoModelForCausalLM.from_pretrained(result.merged_dir).dtype == torch.float32


def test_a_teacher_with_another_tokenizer_is_refused(tiny_lm, tmp_path):
    other = build_chat_tokenizer(["completely different corpus of words for another vocabulary"] * 3, 300)
    teacher = build_tiny_llama(tmp_path / "teacher", other)
    with pytest.raises(TokenizerMismatchError, match="token-level KL needs one tokenizer"):
        train_response_student(PROMPTS, RESPONSES, str(tmp_path / "x"), _config(tiny_lm, beta=0.5),
                               teacher_model=str(teacher), progress=False)
    with pytest.raises(ValueError, match="needs teacher_model"):
        train_response_student(PROMPTS, RESPONSES, str(tmp_path / "y"), _config(tiny_lm, beta=0.5), progress=False)


def test_layer_cut_student_keeps_ends_and_original_weights(tokenizer, tmp_path):
    assert kept_layer_indices(30, 3) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert kept_layer_indices(4, 1) == [0, 1, 2, 3]
    folder = build_tiny_llama(tmp_path / "six", tokenizer, layers=6)
    full = AutoModelForCausalLM.from_pretrained(folder)
    cut = cut_layers(full, keep_every=2)
    assert cut.config.num_hidden_layers == 3
    cut_layers_, full_layers = cut.model.layers, full.model.layers
    torch.testing.assert_close(cut_layers_[1].mlp.up_proj.weight, full_layers[2].mlp.up_proj.weight)
    torch.testing.assert_close(cut_layers_[2].self_attn.q_proj.weight, full_layers[5].self_attn.q_proj.weight)
    ids = torch.tensor([[tokenizer.bos_token_id, 5, 6, 7]])
    assert cut.generate(input_ids=ids, max_new_tokens=4, do_sample=False).shape == (1, 8)

    result = train_response_student(PROMPTS, RESPONSES, str(tmp_path / "cut"),
                                    _config(folder, keep_every=2, max_steps=2), progress=False)
    spec = json.loads((Path(result.adapter_dir) / "student.json").read_text())
    assert spec["keep_every"] == 2 and spec["kept_layers"] == [0, 2, 5]
    assert AutoModelForCausalLM.from_pretrained(result.merged_dir).config.num_hidden_layers == 3
