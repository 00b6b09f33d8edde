"""Helpers shared by the peer workers in bench/peers/ (no third-party imports here).

Every worker measures ONE model in ONE process and prints a JSON object on stdout with the field names of
``encore bench --json``: {"system", "version", "threads", "precision", "results": [{"model", "params",
"input_tokens", "output_tokens", "ttft_ms", "decode_tokens_per_s", "e2e_ms", "peak_rss_mb", "samples"}]}.
Method (same as Encore's ``Benchmark``): batch 1, greedy, no early stop, random input ids; per input length
one warm-up then the median of --reps; TTFT = input ids -> first generated id; decode tokens/s = tokens
2..N over their time; peak RSS = VmHWM after ``/proc/self/clear_refs`` is reset once the model is loaded.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time


def rss_reset() -> None:
    """Starts a new peak-RSS window (Linux); the weights already resident stay counted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_peak_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def lengths(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got '{text}'") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got '{text}'")
    return out


def worker_args(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--input-tokens", type=lengths, default=[512], help="input length(s), comma separated")
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=2, help="timed repetitions per length after one warm-up")
    p.add_argument("--seed", type=int, default=1, help="seed of the random input ids")
    return p


def random_ids(seed: int, vocab: int, n: int, low: int = 3) -> list[int]:
    rng = random.Random(seed * 1_000_003 + n)
    return [rng.randrange(low, vocab) for _ in range(n)]


def measure(run_once, args, vocab: int, log=None) -> list[dict]:
    """Runs ``run_once(ids, n_out) -> (t0, t_first, t_end, n_generated)`` per length: warm-up + reps."""
    results = []
    for L in args.input_tokens:
        rss_reset()   # per length, as Encore's Benchmark does
        ids = random_ids(args.seed, vocab, L)
        samples = []
        for rep in range(args.reps + 1):
            if log:
                log(f"{L} in: {'warm-up' if rep == 0 else f'run {rep}/{args.reps}'}")
            t0, t_first, t_end, n = run_once(ids, args.output_tokens)
            if n != args.output_tokens:
                raise SystemExit(f"generated {n} tokens, expected {args.output_tokens} (early stop?)")
            if rep == 0:
                continue
            samples.append({"ttft_ms": (t_first - t0) * 1e3,
                            "decode_tokens_per_s": (n - 1) / (t_end - t_first) if n > 1 else None,
                            "e2e_ms": (t_end - t0) * 1e3})
        med = lambda k: round(statistics.median(s[k] for s in samples), 3)
        results.append({"input_tokens": L, "output_tokens": args.output_tokens, "ttft_ms": med("ttft_ms"),
                        "decode_tokens_per_s": med("decode_tokens_per_s"), "e2e_ms": med("e2e_ms"),
                        "peak_rss_mb": round(rss_peak_mib(), 1), "samples": samples})
    return results


def emit(report: dict) -> None:
    print(json.dumps(report), flush=True)


def log_stderr(prefix: str):
    return lambda s: print(f"[{prefix}] {s}", file=sys.stderr, flush=True)


now = time.perf_counter
