#!/usr/bin/env python3
"""SmolLM2-135M on the same GGUF: Encore vs llama.cpp, prompt processing and decode tokens/s, in one run.

Each round runs, per weight variant, Encore (``encore bench --model FILE.gguf``) and llama.cpp
(``llamacpp_peer.py``: llama-cpp-python's C API, same file, same threads) in fresh processes, alternating which
goes first; every process times each prompt length after one warm-up (median of --reps). Prompt processing
tokens/s = prompt length / (input ids -> first generated id); decode tokens/s = generated tokens 2..N over their
time (greedy, no early stop, random prompt ids). Ratios Encore/llama.cpp are taken per round, then the median
over rounds; values are medians over rounds.

Variants: ``q4_1`` is the file as shipped (Q4_1 matrices, Q8_0 embeddings); ``q8_0`` and ``f32`` are made from
it by llama.cpp's own quantizer (``llama_model_quantize``, allow_requantize) under --work. Encore reads every
variant; by default it widens GGUF blocks to fp32 on load, with --keep-quantized it computes on the blocks (its
JSON says which decode weights it ran: f32 or gguf).

Usage (from the repository root, after ``swift build -c release --product encore``):

    python3 bench/peers/smollm2_llamacpp.py --rounds 3 --reps 2 --variants q4_1,q8_0,f32 \\
        --write-json bench/results/smollm2-llamacpp.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402,F401
from _driver import (HERE, REPO, encore_bench_cmd, encore_binary, fmt, log, median, result_at, run,  # noqa: E402
                     show)

DEFAULT_GGUF = REPO / "models" / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def variant_file(args, v: str) -> Path:
    if v == "q4_1":
        return args.gguf
    dst = args.work / f"{args.gguf.stem.rsplit('.', 1)[0]}.{v}.gguf"
    if not dst.is_file():
        args.work.mkdir(parents=True, exist_ok=True)
        log(f"making {dst} with llama.cpp's quantizer…")
        subprocess.run([args.llama_python, str(HERE / "llamacpp_peer.py"), "--quantize", str(args.gguf), str(dst), v],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--variants", default="q4_1", help="comma separated: q4_1 (as shipped), q8_0, f32, bf16, q4_0")
    ap.add_argument("--work", type=Path, default=Path("/tmp/encore-peers/smollm2"), help="requantized copies")
    ap.add_argument("--encore", help="Encore binary (default $ENCORE_BIN or .build/release/encore)")
    ap.add_argument("--llama-python", default="/work/venv-llama/bin/python")
    ap.add_argument("--input-tokens", type=_common.lengths, default=[128, 512])
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--keep-quantized", action="store_true",
                    help="Encore computes on the GGUF blocks (encore bench --keep-quantized) instead of widening "
                         "them to fp32 on load")
    ap.add_argument("--write-json", type=Path)
    args = ap.parse_args()
    if not args.gguf.is_file():
        ap.error(f"{args.gguf} not found (scripts/fetch-smollm2.sh fetches it)")
    if min(args.output_tokens - 1, args.threads, args.reps, args.rounds) < 1:
        ap.error("--output-tokens must be >= 2; --threads, --reps, --rounds >= 1")
    encore = encore_binary(args.encore)
    variants = [v for v in args.variants.split(",") if v]
    files = {v: variant_file(args, v) for v in variants}

    def cmd(system, v):
        if system == "encore":
            return encore_bench_cmd(encore, str(files[v]), args.input_tokens, args.output_tokens, args.threads,
                                    args.reps, ["--keep-quantized"] if args.keep_quantized else [])
        return [args.llama_python, str(HERE / "llamacpp_peer.py"), "--gguf", str(files[v]), "--threads",
                str(args.threads), "--input-tokens", ",".join(map(str, args.input_tokens)),
                "--output-tokens", str(args.output_tokens), "--reps", str(args.reps)]

    samples = {v: {"encore": [], "llama.cpp": []} for v in variants}
    meta = {}
    for rnd in range(args.rounds):
        for v in variants:
            order = ["encore", "llama.cpp"] if rnd % 2 == 0 else ["llama.cpp", "encore"]
            for system in order:
                c = cmd(system, v)
                log(f"round {rnd + 1}/{args.rounds} {v} {system}: {show(c)}")
                data, err = run(c, args.timeout)
                if err:
                    raise SystemExit(f"{system} on {v} failed: {err}")
                samples[v][system].append(data)
                meta[system] = {k: data.get(k) for k in ("version", "system", "decode_weights", "blas")}
                if system == "encore":
                    meta[system]["decode_weights"] = data["results"][0].get("decode_weights", data.get("decode_weights"))

    L_max = max(args.input_tokens)
    rows = []   # (variant, metric, encore, llama, ratio, higher_is_better)

    def series(v, system, L, f):
        return [f(result_at(d, L)) for d in samples[v][system]]

    for v in variants:
        metrics = []
        for L in args.input_tokens:
            metrics.append((f"prompt {L} tok/s", L, lambda r, L=L: L / (r["ttft_ms"] / 1e3)))
        for L in args.input_tokens:
            metrics.append((f"decode tok/s @{L}", L, lambda r: r["decode_tokens_per_s"]))
        metrics.append(("peak RSS MiB", L_max, lambda r: r["peak_rss_mb"]))
        for name, L, f in metrics:
            e, l = series(v, "encore", L, f), series(v, "llama.cpp", L, f)
            rows.append({"variant": v, "metric": name, "encore": median(e), "llama_cpp": median(l),
                         "ratio": median([a / b for a, b in zip(e, l) if a and b]), "encore_samples": e,
                         "llama_cpp_samples": l})

    print(f"\nSmolLM2-135M-Instruct, same GGUF, {args.threads} threads, batch 1, greedy, {args.output_tokens} "
          f"generated tokens; medians over {args.rounds} rounds (ratios per round, then median)")
    print(f"Encore: {meta['encore'].get('version')} ({meta['encore'].get('blas')}, decode weights "
          f"{meta['encore'].get('decode_weights')}); llama.cpp: {meta['llama.cpp'].get('version')}\n")
    hdr = f"{'weights':<8} {'metric':<20} {'Encore':>10} {'llama.cpp':>10} {'Encore/llama.cpp':>17}"
    print(hdr)
    print("-" * len(hdr))
    last = None
    for r in rows:
        d = 0 if "RSS" in r["metric"] else 1
        print(f"{(r['variant'] if r['variant'] != last else ''):<8} {r['metric']:<20} {fmt(r['encore'], d)} "
              f"{fmt(r['llama_cpp'], d)} {fmt(r['ratio'], 2, 17)}")
        last = r["variant"]
    print("\n(ratio > 1 = Encore faster for tok/s rows; < 1 = Encore smaller for peak RSS)")
    if args.write_json:
        args.write_json.parent.mkdir(parents=True, exist_ok=True)
        args.write_json.write_text(json.dumps({
            "benchmark": "smollm2_llamacpp", "gguf": str(args.gguf), "files": {v: str(p) for v, p in files.items()},
            "threads": args.threads, "input_tokens": args.input_tokens, "output_tokens": args.output_tokens,
            "reps": args.reps, "rounds": args.rounds, "meta": meta, "rows": rows, "samples": samples}, indent=1) + "\n")
        print(f"wrote {args.write_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
