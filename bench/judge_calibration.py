"""The pairwise judges that run offline, measured on the judge calibration set (all 47 hand-judged pairs).

Each candidate (a builtin model: real weights from pip packages, `mangadistill.core.models.BUILTIN_MODELS`) is
served in-process by the project's teacher server and asked over HTTP through `ChatClient`, exactly as the
response gate asks a local judge (`stages._local_chat_client`, guided choice among {"winner": "A"|"B"|"tie"}, the
packaged judge prompt), every pair in both orders (`calibration.calibrate_judge`). Figures per judge: Cohen's κ
against the person's preference, agreement, order consistency, position-A share of the parsed judgments, failed
judgments and the seconds per judgment (wall time of the calibration / judgments, model loading excluded).
`--free-text` adds a row per judge asked for free-text JSON instead of guided choice (the managed-API path).

Writes bench/results/judge_calibration.json and prints a Markdown table for the README.

    make bench-judges        # or: .venv/bin/python bench/judge_calibration.py [--judge smollm2-135m ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench_support import machine_facts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
JUDGES = ("smollm2-135m", "gemma3-270m")
"""Every instruct or base LM whose weights install offline from the package index (see README, judge table)."""
JUDGE_MAX_NEW_TOKENS = 48
"""The judge prompt's max_tokens: all a free-text verdict needs; guided choice generates nothing."""


def calibration_kinds(uri: str = "") -> dict[str, str]:
    """pair_id -> kind (fact_swap, length_bias, ...) of the packaged set's pairs (the loader keeps no kind)."""
    from mangadistill.core import storage
    from mangadistill.response.gate.calibration import JUDGE_CALIBRATION_FILE

    text, _ = storage.read_text_or_resource(uri or None, JUDGE_CALIBRATION_FILE)
    return {entry["pair_id"]: entry.get("kind", "") for entry in map(json.loads, filter(str.strip, text.splitlines()))}


def measure(judge_ref: str, guided_choice: bool, pairs, kinds: dict[str, str]) -> dict:
    """Serve `judge_ref` in-process, calibrate it on `pairs` over HTTP, and return its row."""
    from mangadistill.core.models import describe_model, resolve_model
    from mangadistill.response.gate.calibration import calibrate_judge
    from mangadistill.response.stages import LOCAL_JUDGE_TIMEOUT_S, _local_chat_client

    folder = resolve_model(judge_ref)  # a first build (GGUF conversion) is set-up, not timed
    with ExitStack() as stack:
        loaded = time.perf_counter()
        client = _local_chat_client(stack, judge_ref, JUDGE_MAX_NEW_TOKENS, LOCAL_JUDGE_TIMEOUT_S, max_retries=1)
        load_s = time.perf_counter() - loaded
        started = time.perf_counter()
        calibration = calibrate_judge(client, pairs, guided_choice=guided_choice)
        wall = time.perf_counter() - started
    metrics = {name.removeprefix("judge_calibration_"): value for name, value in calibration.metrics().items()}
    by_kind: dict[str, list[bool]] = {}
    for pair, choice in zip(calibration.pairs, calibration.choices, strict=True):
        by_kind.setdefault(kinds.get(pair.pair_id, ""), []).append(pair.preferred == choice)
    return {
        "judge": judge_ref, "mode": "guided choice" if guided_choice else "free-text JSON",
        "params": describe_model(folder)["num_parameters"], **metrics,
        "seconds_per_judgment": wall / len(calibration.judgments), "wall_seconds": wall, "load_seconds": load_s,
        "choices": dict(Counter(calibration.choices)),
        "winners": dict(Counter(str(j["winner"]) for j in calibration.judgments)),
        "agreement_by_kind": {kind: sum(hits) / len(hits) for kind, hits in sorted(by_kind.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", action="append", metavar="MODEL",
                        help=f"a builtin model, folder or gs:// prefix (repeatable; default: {', '.join(JUDGES)})")
    parser.add_argument("--free-text", action="store_true",
                        help="also ask each judge for free-text JSON (no guided choice)")
    parser.add_argument("--calibration", default="", help="a calibration JSONL (default: the packaged 47 pairs)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's choice); 1 is far faster on a machine other jobs load")
    parser.add_argument("--out", type=Path, default=RESULTS / "judge_calibration.json")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from mangadistill.response.gate.calibration import load_judge_calibration
    from mangadistill.response.gate.judge import load_judge_prompt

    pairs = load_judge_calibration(args.calibration)
    kinds = calibration_kinds(args.calibration)
    rows = []
    for judge in args.judge or JUDGES:
        for guided in (True, False) if args.free_text else (True,):
            row = measure(judge, guided, pairs, kinds)
            rows.append(row)
            print(f"{judge} ({row['mode']}): κ {row['kappa']:.3f}, position A {row['position_a_share']:.0%}, "
                  f"{row['seconds_per_judgment']:.2f} s per judgment", flush=True)
    human = dict(Counter(pair.preferred for pair in pairs))
    best = max(rows, key=lambda row: (row["kappa"], row["order_consistency"]))
    result = {"machine": machine_facts(), "command": "make bench-judges", "pairs": len(pairs),
              "human_preferences": human, "judge_prompt_version": load_judge_prompt().version,
              "judges": rows, "best": {"judge": best["judge"], "mode": best["mode"], "kappa": best["kappa"]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{len(pairs)} hand-judged pairs, each judged in both orders; person: {human}\n")
    print("| judge | mode | params | κ | agreement | order consistency | position-A share | failed | s / judgment |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        params = f"{row['params'] / 1e6:.0f}M" if row["params"] else "?"
        print(f"| {row['judge']} | {row['mode']} | {params} | {row['kappa']:.3f} | {row['agreement']:.3f} | "
              f"{row['order_consistency']:.3f} | {row['position_a_share']:.3f} | {row['failed_judgments']:.0f} | "
              f"{row['seconds_per_judgment']:.2f} |")
    print(f"\nbest κ: {best['judge']} ({best['mode']}), κ {best['kappa']:.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
