"""GGUF (llama.cpp) against transformers for the response student, measured in one run on this machine: greedy
generation tokens per second and quality on the hand-written evaluation set.

Models: the student in transformers fp32 (--student, default smollm2-135m, the demo's student model); its GGUF
export (`mangadistill.response.gguf_export`: f16, then llama.cpp's Q8_0 and Q4_K_M) run by llama.cpp through
llama-cpp-python; and the teacher as the project runs it (--teacher, default the demo's teacher_model: the
same SmolLM2-135M-Instruct, fp32 in transformers through `LocalChatModel`, as the labelling stage and the gate
serve a local teacher).

Speed (the gate's method, `gate.measure_side_by_side`, extended to llama.cpp): the first --speed-prompts eval
prompts, exactly --max-new-tokens greedy new tokens each (end of sequence ignored), prompt processing included;
a warm-up generation per model, then --repeats rounds, each running every prompt through every model in turn,
so a change in machine load hits all alike. A model's figure for a round = its new tokens / its wall time over
the round; reported: median, min, max and spread (max − min) / median. torch and llama.cpp get the same
thread count (--threads, default torch's own count, i.e. what the project runs). On a machine that other
processes keep busy, more threads than free cores slows both engines many times over (their worker threads
wait for each other at every step), so compare figures only at one thread count and look at the load average
recorded with them.

Quality: every model answers the eval prompts the way the gate asks the student (`gate.answer_eval_prompts`:
`training.chat_messages`, the tokenizer's chat template, greedy, at most --max-new-tokens, stop at end of
sequence); llama.cpp is fed the same prompt token ids. Then the catalog hallucination rate
(`factcheck.check_responses`) and the pass rate of each slice (`gate.slice_check`, `slice_scores`) with the fact
rows built as tests/response/test_handwritten_eval.py builds them. --per-slice N takes the first N rows of each
slice (default: all 72 rows). When teacher and student are the same folder their greedy answers are the same
computation, so the teacher's quality row reuses the student's answers (said in the output).

Needs llama-cpp-python (`make gguf`). Writes bench/results/response_gguf.json and prints a Markdown table.

    make bench-gguf      # or: .venv/bin/python bench/response_gguf.py [--per-slice 6] [--student FOLDER]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_support import machine_facts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


class LlamaCppChat:
    """A GGUF file served by llama.cpp in-process, with the transformers tokenizer's chat template, so its
    prompts are the same token ids the transformers models get. `complete` is the gate's backend interface
    (`answer_eval_prompts`); `timed` is one throughput call."""

    def __init__(self, path: Path, tokenizer: Any, name: str, threads: int, context: int = 2048) -> None:
        from mangadistill.response.gguf_export import require_llama_cpp

        llama_cpp = require_llama_cpp()
        self.model, self.tokenizer, self.path = name, tokenizer, path
        self.llm = llama_cpp.Llama(str(path), n_ctx=context, n_batch=512, n_threads=threads,
                                   n_threads_batch=threads, verbose=False, seed=0)
        self.eos = self.llm.token_eos()

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]

    def generate(self, ids: list[int], max_new_tokens: int, stop_at_eos: bool) -> list[int]:
        """Greedy new token ids after `ids`, from an empty KV cache (no prefix reuse between calls)."""
        self.llm.reset()
        new: list[int] = []
        for token in self.llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                       reset=True):
            if stop_at_eos and token == self.eos:
                break
            new.append(token)
            if len(new) >= max_new_tokens:
                break
        return new

    def timed(self, messages: Sequence[dict[str, str]], max_new_tokens: int) -> tuple[int, float]:
        ids = self.prompt_ids(messages)
        start = time.perf_counter()
        new = self.generate(ids, max_new_tokens, stop_at_eos=False)
        return len(new), time.perf_counter() - start

    def complete(self, messages: Sequence[dict[str, str]], temperature: float = 0.0, max_tokens: int = 256,
                 **_: Any):
        from mangadistill.core.chat_api import ChatCallFailed, ChatResult

        started = time.monotonic()
        ids = self.prompt_ids(messages)
        new = self.generate(ids, max_tokens, stop_at_eos=True)
        content = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        if not content:
            raise ChatCallFailed("empty answer content", 1, {"prompt_tokens": len(ids), "completion_tokens": len(new)})
        return ChatResult(content, self.model, len(ids), len(new), 0.0, 1, time.monotonic() - started,
                          "length" if len(new) >= max_tokens else "stop")


class TransformersChat:
    """A transformers model loaded the way the gate and the labelling stage load it (`LocalChatModel`, fp32)."""

    def __init__(self, model_ref: str, name: str, max_new_tokens: int) -> None:
        from mangadistill.core.teacher_server import LocalChatModel

        self.backend = LocalChatModel(model_ref, name=name, device="cpu", max_new_tokens=max_new_tokens)
        self.model, self.tokenizer = name, self.backend.tokenizer

    def timed(self, messages: Sequence[dict[str, str]], max_new_tokens: int) -> tuple[int, float]:
        from mangadistill.response.quantization import generation_throughput

        prompt = messages[-1]["content"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        measured = generation_throughput(self.backend.lm, self.tokenizer, [prompt], max_new_tokens, system,
                                         warmup=False)
        return measured["new_tokens"], measured["seconds"]

    def complete(self, *args: Any, **kwargs: Any):
        return self.backend.complete(*args, **kwargs)


def measure_speed(models: dict[str, Any], prompts: list[str], max_new_tokens: int, repeats: int) -> dict[str, dict]:
    """Per model: tokens/s per round, median, min, max, spread; interleaved rounds after one warm-up each."""
    from mangadistill.response.training import chat_messages

    conversations = [chat_messages(prompt) for prompt in prompts]
    for backend in models.values():
        backend.timed(conversations[0], max_new_tokens)  # warm-up, untimed
    rounds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        tokens, seconds = dict.fromkeys(models, 0), dict.fromkeys(models, 0.0)
        for conversation in conversations:
            for name, backend in models.items():
                new, spent = backend.timed(conversation, max_new_tokens)
                tokens[name] += new
                seconds[name] += spent
        for name in models:
            rounds[name].append(tokens[name] / seconds[name])
    figures = {}
    for name, values in rounds.items():
        median = statistics.median(values)
        figures[name] = {"tokens_per_s_rounds": values, "tokens_per_s_median": median,
                         "tokens_per_s_min": min(values), "tokens_per_s_max": max(values),
                         "tokens_per_s_relative_spread": (max(values) - min(values)) / median}
    return figures


def measure_quality(backend: Any, rows: list[dict], max_new_tokens: int) -> dict[str, Any]:
    """The gate's answers (`answer_eval_prompts`), hallucination rate and slice pass rates for one model."""
    from mangadistill.response.factcheck import CatalogIndex, check_responses
    from mangadistill.response.gate import answer_eval_prompts
    from mangadistill.response.gate.slices import slice_check, slice_scores
    from mangadistill.sample_data.catalog import catalog_records

    started = time.perf_counter()
    answers, unanswered = answer_eval_prompts(backend, rows, None, max_tokens=max_new_tokens)
    seconds = time.perf_counter() - started
    texts = answers.column("response").to_pylist()
    ids = [row["eval_id"] for row in rows]
    table, summary = check_responses(texts, CatalogIndex(catalog_records()), ids)
    facts = table.to_pylist()
    passed = [slice_check(row, text, fact) for row, text, fact in zip(rows, texts, facts, strict=True)]
    return {"hallucination_rate": summary["hallucination_rate"], "slice_pass_rates": slice_scores(rows, passed),
            "pass_rate": sum(passed) / len(passed), "unanswered": unanswered.num_rows,
            "mean_completion_tokens": statistics.mean(answers.column("completion_tokens").to_pylist()),
            "answer_seconds": seconds, "answers": dict(zip(ids, texts, strict=True))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="smollm2-135m", help="builtin name or merged transformers folder")
    parser.add_argument("--teacher", default=None, help="default: the demo's teacher_model")
    parser.add_argument("--gguf-dir", default=str(ROOT / "mangadistill-output" / "bench-gguf"))
    parser.add_argument("--per-slice", type=int, default=None, help="first N eval rows per slice (default all)")
    parser.add_argument("--speed-prompts", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch and llama.cpp threads (default: torch's own count, what the project runs)")
    args = parser.parse_args()

    import torch

    from mangadistill.core.models import resolve_model
    from mangadistill.response.evalset import handwritten_eval_set
    from mangadistill.response.gguf_export import GGUF_QUANTS, export_student_gguf, require_llama_cpp
    from mangadistill_pipelines.response_distillation import RESPONSE_DEMO_PARAMS

    llama_cpp = require_llama_cpp()
    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    teacher_ref = args.teacher or RESPONSE_DEMO_PARAMS["teacher_model"]
    student_dir, teacher_dir = resolve_model(args.student), resolve_model(teacher_ref)
    started = time.perf_counter()
    files = export_student_gguf(student_dir, Path(args.gguf_dir), GGUF_QUANTS, threads=args.threads)
    export_seconds = time.perf_counter() - started

    student = TransformersChat(args.student, "student-fp32", args.max_new_tokens)
    models: dict[str, Any] = {"student fp32 (transformers)": student}
    for quant in GGUF_QUANTS:
        models[f"student GGUF {quant} (llama.cpp)"] = LlamaCppChat(files[quant], student.tokenizer,
                                                                   f"student-{quant}", args.threads)
    models["teacher fp32 (transformers)"] = TransformersChat(teacher_ref, "teacher-fp32", args.max_new_tokens)

    rows = handwritten_eval_set(per_slice=args.per_slice).to_pylist()
    prompts = [row["prompt"] for row in rows[:max(1, args.speed_prompts)]]
    speed = measure_speed(models, prompts, args.max_new_tokens, args.repeats)
    quality: dict[str, dict] = {}
    for name, backend in models.items():
        if name.startswith("teacher") and Path(teacher_dir) == Path(student_dir):
            quality[name] = {**quality["student fp32 (transformers)"],
                             "note": "same folder as the student: its greedy answers, not generated again"}
            continue
        quality[name] = measure_quality(backend, rows, args.max_new_tokens)
        print(f"{name}: answered {len(rows)} prompts in {quality[name]['answer_seconds']:.0f} s", flush=True)

    sizes = {"student fp32 (transformers)": sum(p.stat().st_size for p in Path(student_dir).glob("*.safetensors")),
             **{f"student GGUF {q} (llama.cpp)": files[q].stat().st_size for q in GGUF_QUANTS},
             "teacher fp32 (transformers)": sum(p.stat().st_size for p in Path(teacher_dir).glob("*.safetensors"))}
    result = {
        "machine": machine_facts(), "command": "make bench-gguf", "args": vars(args),
        "llama_cpp_python": llama_cpp.__version__, "student": student_dir, "teacher": teacher_dir,
        "teacher_note": "the teacher as the project runs it: the demo's teacher_model in transformers fp32 "
                        "(LocalChatModel); with the default student it is the same SmolLM2-135M-Instruct weights",
        "eval_rows": len(rows), "speed_prompts": len(prompts), "gguf_files": {k: str(v) for k, v in files.items()},
        "export_and_quantize_seconds": export_seconds,
        "models": {name: {"size_mib": sizes[name] / 2**20, **speed[name], **quality[name]} for name in models},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "response_gguf.json").write_text(json.dumps(result, indent=2))

    slices = list(next(iter(quality.values()))["slice_pass_rates"])
    print(f"\n{len(rows)} eval prompts; speed on {len(prompts)} prompts × {args.max_new_tokens} new tokens, "
          f"{args.repeats} rounds after a warm-up, {args.threads} threads; greedy")
    print("\n| model | size MiB | tokens/s median | min–max | hallucination rate | "
          + " | ".join(f"{s} pass" for s in slices) + " |\n|---|---|---|---|---|" + "---|" * len(slices))
    for name, figures in result["models"].items():
        print(f"| {name} | {figures['size_mib']:.0f} | {figures['tokens_per_s_median']:.1f} | "
              f"{figures['tokens_per_s_min']:.1f}–{figures['tokens_per_s_max']:.1f} | "
              f"{figures['hallucination_rate']:.3f} | "
              + " | ".join(f"{figures['slice_pass_rates'][s]:.2f}" for s in slices) + " |")
    base = result["models"]["student fp32 (transformers)"]["tokens_per_s_median"]
    print("\nspeed-up over the fp32 student: " + ", ".join(
        f"{name}: {figures['tokens_per_s_median'] / base:.2f}×" for name, figures in result["models"].items()))
    print(f"export + quantization {export_seconds:.0f} s; results in {RESULTS / 'response_gguf.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
