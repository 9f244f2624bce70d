"""bitsandbytes int8 / NF4 of the response student on the CPU, from a LoRA adapter trained on a tiny llama."""

import json
from pathlib import Path

import pytest
import torch
from fakes import PROMPTS, RESPONSES, build_chat_tokenizer, build_tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from mangadistill.core.benchmarking import torch_threads
from mangadistill.response.quantization import REPORT_FILE, quantize_response_model
from mangadistill.response.training import ResponseTrainConfig, chat_prompt, train_response_student


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; several threads stall on shared cores."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A LoRA adapter folder on a tiny llama whose linear layers hold most weights, as in a real LM."""
    root = tmp_path_factory.mktemp("quant")
    tokenizer = build_chat_tokenizer(PROMPTS + RESPONSES, vocab_size=300)
    student = build_tiny_llama(root / "student", tokenizer, layers=2, hidden=128, intermediate=512)
    config = ResponseTrainConfig(student_model=str(student), max_steps=2, batch_size=3, max_length=64, lora_r=4,
                                 warmup_ratio=0.0)
    return Path(train_response_student(PROMPTS, RESPONSES, str(root / "trained"), config, progress=False).output_dir)


@pytest.fixture(scope="module")
def report(trained, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("quantized")
    return quantize_response_model(str(trained / "adapter"), str(out), PROMPTS[:2], max_new_tokens=4, threads=1)


def _logits(folder: str, prompt: str) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
    batch = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits.float()


def test_report_fields_and_sizes_shrink(report, trained):
    assert report["merged_from_adapter"] and set(report["models"]) == {"baseline", "int8", "nf4"}
    models = report["models"]
    for figure in ("size_on_disk_mib", "parameter_mib"):
        assert models["nf4"][figure] < models["int8"][figure] < models["baseline"][figure]
    for mode in ("int8", "nf4"):
        figures = models[mode]
        assert figures["tokens_per_second"] > 0 and 0.0 <= figures["greedy_token_agreement"] <= 1.0
        assert figures["reload_max_abs_logit_diff"] < 1e-4
        assert {"rss_delta_mib", "load_seconds", "sample_output"} <= set(figures)
        assert report["ratios"][mode]["size_on_disk"] == pytest.approx(
            figures["size_on_disk_mib"] / models["baseline"]["size_on_disk_mib"])
    on_disk = json.loads((Path(models["int8"]["path"]).parent / REPORT_FILE).read_text())
    assert on_disk == json.loads(json.dumps(report))


def test_the_merged_model_is_the_trained_one(report, trained):
    for name, tensor in AutoModelForCausalLM.from_pretrained(report["models"]["baseline"]["path"]).state_dict().items():
        torch.testing.assert_close(tensor, AutoModelForCausalLM.from_pretrained(trained / "merged").state_dict()[name])


def test_saved_quantized_models_load_back_quantized_and_stay_close(report, tmp_path):
    baseline = _logits(report["models"]["baseline"]["path"], PROMPTS[3])
    tokenizer = AutoTokenizer.from_pretrained(report["models"]["baseline"]["path"])
    other = build_tiny_llama(tmp_path / "unrelated", tokenizer, layers=2, hidden=128, intermediate=512, seed=1)
    unrelated = ((_logits(str(other), PROMPTS[3]) - baseline).norm() / baseline.norm()).item()
    errors = {}
    for mode, flag in (("int8", "load_in_8bit"), ("nf4", "load_in_4bit")):
        folder = report["models"][mode]["path"]
        config = json.loads((Path(folder) / "config.json").read_text())["quantization_config"]
        assert config[flag] is True
        quantized = _logits(folder, PROMPTS[3])
        errors[mode] = ((quantized - baseline).norm() / baseline.norm()).item()
    # relative logit error: int8 keeps ~8 bits per weight, NF4 ~4 (about 9% weight error on Gaussian weights)
    assert errors["int8"] < 0.05 and errors["int8"] < errors["nf4"] < 0.5 * unrelated


def test_unknown_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown quantization modes"):
        quantize_response_model(str(tmp_path), str(tmp_path / "out"), PROMPTS, modes=("int4",))
