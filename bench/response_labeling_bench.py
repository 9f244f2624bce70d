"""Response labelling throughput against concurrency, as a share of what the teacher server itself sustains.

The teacher is a fixed-latency OpenAI-compatible server (a real ThreadingHTTPServer on 127.0.0.1) that works
on at most `--capacity` requests at once and takes `--latency-ms` per request, so it sustains at most
capacity / latency requests per second, like a model server with a fixed batch capacity. Two measurements of
the same requests (the rendered, retrieval-grounded teacher prompts of `--prompts` catalog questions):

1. plain load: `--load-threads` threads POST the requests with bare `requests` calls, no client machinery;
   that throughput is what the server sustains;
2. `label_responses` through `ChatClient` at concurrency 1, 2, 4, 8, 16, each with a fresh cache; then a
   rerun with the warm cache (it must make zero teacher calls).

Target: labelling at its best concurrency reaches >= 90% of the plain-load throughput. Writes
bench/results/response_labeling.json.

    .venv/bin/python bench/response_labeling_bench.py [--latency-ms 50 --capacity 8 --prompts 160]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from mangadistill.core.chat_api import ChatClient
from mangadistill.core.retrieval import CatalogIndex
from mangadistill.response.cache import ResponseCache
from mangadistill.response.labeling import label_responses, load_prompt, load_rubric, render_messages
from mangadistill.sample_data.catalog import catalog_records

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CONCURRENCY = (1, 2, 4, 8, 16)
TARGET_SHARE = 0.90


def fixed_latency_server(latency_s: float, capacity: int) -> tuple[ThreadingHTTPServer, dict[str, int]]:
    """An OpenAI-compatible chat server: each request holds one of `capacity` slots for `latency_s`."""
    slots = threading.BoundedSemaphore(capacity)
    counter = {"requests": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall

        def log_message(self, format, *args):
            pass

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with slots:
                time.sleep(latency_s)
            with lock:
                counter["requests"] += 1
            words = len(request["messages"][-1]["content"].split())
            body = json.dumps({
                "object": "chat.completion", "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "A grounded answer."},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": words, "completion_tokens": 4, "total_tokens": words + 4},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, counter


def questions(count: int, records: list[dict]) -> list[dict]:
    forms = ("Is {t} finished?", "how many volumes does {t} have", "price of {t} vol 1?",
             "something like {t} but darker", "is {t} in stock")
    return [{"prompt_id": f"q{i:04d}", "prompt": forms[i % len(forms)].format(t=records[i % len(records)]["title"])}
            for i in range(count)]


def plain_load(url: str, payloads: list[dict], threads: int) -> float:
    """Requests per second when `threads` threads POST `payloads` back to back with bare requests calls."""
    local = threading.local()

    def post(payload: dict) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        local.session.post(url, json=payload, timeout=30).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(post, payloads))
    return len(payloads) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=160)
    parser.add_argument("--load-threads", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS / "response_labeling.json")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1")
    os.environ.setdefault("TQDM_DISABLE", "1")

    records = catalog_records()
    prompts = questions(args.prompts, records)
    prompt, rubric = load_prompt(), load_rubric()
    index = CatalogIndex.from_records(records)
    by_sku = {record["sku"]: record for record in records}
    payloads = [{"model": "bench-teacher", "temperature": prompt.temperature, "max_tokens": prompt.max_tokens,
                 "messages": render_messages(item["prompt"], [by_sku[sku] for sku, _ in
                                                              index.search(item["prompt"], prompt.retrieval_k)],
                                             prompt, rubric)} for item in prompts]

    server, counter = fixed_latency_server(args.latency_ms / 1000, args.capacity)
    base_url = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        plain_load(base_url + "/chat/completions", payloads[:16], args.load_threads)  # warm-up, not timed
        server_rps = plain_load(base_url + "/chat/completions", payloads, args.load_threads)
        curve = []
        with tempfile.TemporaryDirectory() as workdir:
            for concurrency in CONCURRENCY:
                client = ChatClient(base_url, "bench-teacher", concurrency=concurrency, max_retries=0)
                cache = ResponseCache(Path(workdir, f"c{concurrency}"))
                labels = label_responses(prompts, client, cache, records, concurrency=concurrency)
                assert labels.rows.num_rows == len(prompts), labels.quarantine.to_pylist()[:3]
                rps = len(prompts) / labels.metrics["wall_s"]
                curve.append({"concurrency": concurrency, "prompts_per_s": round(rps, 2),
                              "share_of_server": round(rps / server_rps, 3),
                              "wall_s": round(labels.metrics["wall_s"], 2)})
                print(f"concurrency {concurrency:2d}: {rps:7.1f} prompts/s = {rps / server_rps:6.1%} of the server")
            before = counter["requests"]
            warm = label_responses(prompts, ChatClient(base_url, "bench-teacher", concurrency=16), cache, records)
            warm_calls = counter["requests"] - before
    finally:
        server.shutdown()
        server.server_close()

    best = max(curve, key=lambda point: point["prompts_per_s"])
    result = {
        "server": {"kind": "fixed-latency OpenAI-compatible fake", "latency_ms": args.latency_ms,
                   "capacity": args.capacity, "ceiling_rps": args.capacity / (args.latency_ms / 1000)},
        "prompts": args.prompts,
        "plain_load": {"threads": args.load_threads, "requests_per_s": round(server_rps, 2)},
        "labelling": curve,
        "best": best,
        "target": {"share_of_server": TARGET_SHARE, "met": best["share_of_server"] >= TARGET_SHARE},
        "warm_rerun": {"teacher_calls": warm_calls, "cache_hits": warm.metrics["cache_hits"],
                       "wall_s": round(warm.metrics["wall_s"], 3)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"plain load: {server_rps:.1f} requests/s (ceiling {result['server']['ceiling_rps']:.0f}); best labelling "
          f"{best['prompts_per_s']:.1f} prompts/s at concurrency {best['concurrency']} = "
          f"{best['share_of_server']:.1%} (target {TARGET_SHARE:.0%}); warm rerun: {warm_calls} teacher calls")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
