"""GPU check of the response student on a CUDA machine, through the same library code the CPU tests run.

1. a short bf16 LoRA training run on CUDA (``train_response_student``): the layer-cut SmolLM2 student with
   gradient checkpointing and the token-level KL against the uncut model, a checkpoint at the end;
2. bitsandbytes int8 and NF4 of the trained adapter on the GPU (``quantize_response_model``), each saved and
   loaded back;
3. generation throughput (greedy, batch 1, fixed new tokens) before and after.

Prints a JSON summary on stdout. Exits with status 2 and a message on stderr when no CUDA device is visible.
About 2-4 minutes on one GPU (the first run also converts SmolLM2's GGUF: 30-90 s).

    .venv/bin/python bench/gpu_check.py [--model smollm2-135m] [--keep-every 3] [--steps 5] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from mangadistill.response.quantization import quantize_response_model
from mangadistill.response.training import ResponseTrainConfig, train_response_student
from mangadistill.sample_data.catalog import catalog_records

NO_CUDA_EXIT = 2


def catalog_rows(count: int) -> tuple[list[str], list[str]]:
    """`count` (prompt, response) pairs about catalog titles, answered from the catalog record itself."""
    prompts, responses = [], []
    for record in catalog_records()[:count]:
        authors = " and ".join(record["authors"])
        prompts.append(f"Tell me about {record['title']}: how many volumes, and is it in stock?")
        stock = f"{record['stock']} copies in stock" if record["stock"] else "out of stock right now"
        responses.append(
            f"{record['title']} by {authors} is a {record['demographic']} series with {record['volumes']} volumes "
            f"({record['status']}). Each volume costs ${record['price_usd']:.2f} and we have {stock}."
        )
    return prompts, responses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="student base and KL teacher (resolve_model ref)")
    parser.add_argument("--keep-every", type=int, default=3, help="layer cut of the student (1: no cut)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--output-dir", help="kept when given, a temporary folder otherwise")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device visible (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}); run this on a CUDA machine with a CUDA build of torch",
            file=sys.stderr,
        )
        return NO_CUDA_EXIT
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        out = Path(args.output_dir or scratch)
        prompts, responses = catalog_rows(args.rows)
        config = ResponseTrainConfig(
            student_model=args.model, keep_every=args.keep_every, max_steps=args.steps, batch_size=8,
            max_length=192, mixed_precision="bf16", gradient_checkpointing=True, beta=0.5,
            checkpoint_every=args.steps,
        )
        trained = train_response_student(prompts, responses, str(out / "train"), config, teacher_model=args.model,
                                         checkpoint_dir=str(out / "checkpoints"), progress=False)
        quantized = quantize_response_model(trained.adapter_dir, str(out / "quantized"), prompts[:4],
                                            max_new_tokens=args.max_new_tokens, device="cuda")
    summary = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
        "training": {
            "device": trained.device, "steps": trained.steps_run, "seconds_per_step": trained.seconds_per_step,
            "first_loss": trained.step_losses[0], "last_loss": trained.step_losses[-1],
            "first_kl": trained.step_kl[0], "trainable_parameters": trained.trainable_parameters,
            "num_parameters": trained.num_parameters,
        },
        "quantization": {
            name: {key: figures[key] for key in (
                "tokens_per_second", "parameter_mib", "size_on_disk_mib", "cuda_allocated_mib",
                "greedy_token_agreement", "reload_max_abs_logit_diff") if key in figures}
            for name, figures in quantized["models"].items()
        },
        "ratios": quantized["ratios"],
        "total_seconds": time.perf_counter() - started,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
