#!/usr/bin/env python3
"""Encore vs PyTorch on the Mu-330M config and its decoder-only twin: TTFT, decode speed, memory.

Runs the Encore command (which must print the JSON of ``encore bench --json`` on stdout) and the PyTorch
peer ``bench/peers/mu_torch.py`` with the same lengths and threads, each in a fresh process, alternating
their order over --rounds rounds (A B, B A, ...), and prints per model Encore and PyTorch TTFT, decode
tokens/s and peak RSS with the ratios Encore/PyTorch, plus the encoder-decoder vs decoder-only ratios
within each system. Values are medians over rounds; ratios are computed per round, then the median.

Usage (from the repository root):

    python3 bench/compare_mu.py --rounds 2 \\
        --encore ".build/release/encore bench --preset mu-330m --input-tokens 512 --output-tokens 64 --threads 2 --json" \\
        --python /work/venv/bin/python --write-json /tmp/compare_mu.json

--input-tokens, --output-tokens, --threads and --reps go to the PyTorch peer; the Encore command is run as
given (split with shlex), and the lengths it reports must match the peer's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("mu", "mu_decoder")


class CompareError(Exception):
    pass


def parse_json_output(text: str, who: str) -> dict:
    """The JSON object printed on stdout (the whole output, or its last {...} block if there is chatter)."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start + 1 if start >= 0 else -1
    if start >= 0:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            pass
    snippet = text[-300:] if text else "(empty)"
    raise CompareError(f"{who} did not print JSON on stdout; it printed: {snippet}")


def run(cmd, who, timeout):
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise CompareError(f"{who}: command not found: {cmd[0]}") from None
    except subprocess.TimeoutExpired:
        raise CompareError(f"{who}: no result within {timeout} s: {shlex.join(cmd)}") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise CompareError(f"{who} exited with {proc.returncode}: {shlex.join(cmd)}\n{tail}")
    data = parse_json_output(proc.stdout, who)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise CompareError(f"{who}: the JSON has no 'results' list")
    by_model = {}
    for r in results:
        if not isinstance(r, dict) or r.get("model") not in MODELS:
            continue
        for key in ("ttft_ms", "decode_tokens_per_s", "peak_rss_mb", "input_tokens", "output_tokens"):
            if not isinstance(r.get(key), (int, float)) or isinstance(r.get(key), bool):
                raise CompareError(f"{who}: result for {r['model']} lacks a number '{key}'")
        by_model[r["model"]] = r
    print(f"  {who}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return data, by_model


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--encore", required=True,
                        help="the Encore bench command, printing `encore bench --json` output on stdout")
    parser.add_argument("--python", default=sys.executable,
                        help="Python with torch for the PyTorch peer (default: this one)")
    parser.add_argument("--peer", type=Path, default=HERE / "peers" / "mu_torch.py", help="the PyTorch peer script")
    parser.add_argument("--input-tokens", type=int, default=512)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions inside each peer process")
    parser.add_argument("--rounds", type=int, default=2, help="fresh-process rounds, order alternating")
    parser.add_argument("--models", default="mu,mu_decoder", help="models to compare (default mu,mu_decoder)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process (default 1800)")
    parser.add_argument("--write-json", metavar="OUT", help="write all samples, medians and ratios to OUT")
    args = parser.parse_args(argv)

    if min(args.input_tokens, args.output_tokens, args.threads, args.reps, args.rounds) < 1:
        parser.error("--input-tokens, --output-tokens, --threads, --reps and --rounds must be positive")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        parser.error(f"--models must be a comma-separated subset of {', '.join(MODELS)}")
    try:
        encore_cmd = shlex.split(args.encore)
    except ValueError as e:
        parser.error(f"--encore: {e}")
    if not encore_cmd:
        parser.error("--encore is empty")
    if not args.peer.is_file():
        parser.error(f"--peer: {args.peer} not found")

    try:
        report = compare(args, models, encore_cmd)
    except CompareError as e:
        print(f"compare_mu.py: error: {e}", file=sys.stderr)
        return 1
    print_table(report, models)
    if args.write_json:
        Path(args.write_json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.write_json}")
    return 0


def compare(args, models, encore_cmd):
    samples = {"encore": [], "pytorch": []}  # per round: {model: result}
    meta = {}
    peer_cmd = [args.python, str(args.peer), "--threads", str(args.threads),
                "--input-tokens", str(args.input_tokens), "--output-tokens", str(args.output_tokens),
                "--reps", str(args.reps), "--models", ",".join(models), "--json", "-"]
    for rnd in range(args.rounds):
        order = ["encore", "pytorch"] if rnd % 2 == 0 else ["pytorch", "encore"]
        print(f"round {rnd + 1}/{args.rounds}: {' then '.join(order)}", file=sys.stderr, flush=True)
        for system in order:
            cmd = encore_cmd if system == "encore" else peer_cmd
            data, by_model = run(cmd, system, args.timeout)
            missing = [m for m in models if m not in by_model]
            if missing:
                raise CompareError(f"{system}: no result for {', '.join(missing)}")
            for m in models:
                r = by_model[m]
                if (r["input_tokens"], r["output_tokens"]) != (args.input_tokens, args.output_tokens):
                    raise CompareError(
                        f"{system} measured {m} at {r['input_tokens']} input / {r['output_tokens']} output "
                        f"tokens, but the comparison is at {args.input_tokens} / {args.output_tokens}: "
                        "give the Encore command the same --input-tokens/--output-tokens")
            samples[system].append({m: by_model[m] for m in models})
            meta[system] = {k: v for k, v in data.items() if k != "results"}

    def series(system, model, key):
        return [rnd[model].get(key) for rnd in samples[system]]

    summary = {}
    for system in samples:
        summary[system] = {m: {k: med(series(system, m, k)) for k in
                               ("encode_ms", "ttft_ms", "decode_tokens_per_s", "peak_rss_mb", "params")}
                           for m in models}

    def ratio_med(num, den):
        return med([a / b if a is not None and b else None for a, b in zip(num, den)])

    ratios = {m: {
        "ttft_encore_over_pytorch": ratio_med(series("encore", m, "ttft_ms"), series("pytorch", m, "ttft_ms")),
        "decode_speed_encore_over_pytorch": ratio_med(series("encore", m, "decode_tokens_per_s"),
                                                      series("pytorch", m, "decode_tokens_per_s")),
        "peak_rss_encore_over_pytorch": ratio_med(series("encore", m, "peak_rss_mb"),
                                                  series("pytorch", m, "peak_rss_mb")),
    } for m in models}
    within = {}
    if "mu" in models and "mu_decoder" in models:
        for system in samples:
            within[system] = {
                "ttft_mu_over_mu_decoder": ratio_med(series(system, "mu", "ttft_ms"),
                                                     series(system, "mu_decoder", "ttft_ms")),
                "decode_speed_mu_over_mu_decoder": ratio_med(series(system, "mu", "decode_tokens_per_s"),
                                                             series(system, "mu_decoder", "decode_tokens_per_s")),
            }
    return {"input_tokens": args.input_tokens, "output_tokens": args.output_tokens, "threads": args.threads,
            "rounds": args.rounds, "encore_command": encore_cmd, "meta": meta, "median": summary,
            "ratios": ratios, "encoder_decoder_vs_decoder_only": within, "samples": samples}


def print_table(report, models):
    med_, rat = report["median"], report["ratios"]
    torch_v = report["meta"].get("pytorch", {}).get("torch_version", "?")
    print(f"\nMu-330M config, {report['input_tokens']} input -> {report['output_tokens']} output tokens, "
          f"{report['threads']} threads, fp32, batch 1; medians over {report['rounds']} rounds "
          f"(PyTorch {torch_v}, with KV cache)\n")
    hdr = f"{'model':<11} {'metric':<14} {'Encore':>10} {'PyTorch':>10} {'Encore/PyTorch':>15}"
    print(hdr)
    print("-" * len(hdr))
    for m in models:
        e, p, r = med_["encore"][m], med_["pytorch"][m], rat[m]
        print(f"{m:<11} {'TTFT ms':<14} {fmt(e['ttft_ms']):>10} {fmt(p['ttft_ms']):>10} "
              f"{fmt(r['ttft_encore_over_pytorch'], 2):>15}")
        print(f"{'':<11} {'decode tok/s':<14} {fmt(e['decode_tokens_per_s']):>10} "
              f"{fmt(p['decode_tokens_per_s']):>10} {fmt(r['decode_speed_encore_over_pytorch'], 2):>15}")
        print(f"{'':<11} {'peak RSS MiB':<14} {fmt(e['peak_rss_mb'], 0):>10} {fmt(p['peak_rss_mb'], 0):>10} "
              f"{fmt(r['peak_rss_encore_over_pytorch'], 2):>15}")
    w = report["encoder_decoder_vs_decoder_only"]
    if w:
        print("\nencoder-decoder vs decoder-only, within each system (mu / mu_decoder):\n")
        hdr = f"{'ratio':<34} {'Encore':>8} {'PyTorch':>8}"
        print(hdr)
        print("-" * len(hdr))
        print(f"{'TTFT (lower = enc-dec faster)':<34} {fmt(w['encore']['ttft_mu_over_mu_decoder'], 2):>8} "
              f"{fmt(w['pytorch']['ttft_mu_over_mu_decoder'], 2):>8}")
        print(f"{'decode speed (higher = enc-dec)':<34} "
              f"{fmt(w['encore']['decode_speed_mu_over_mu_decoder'], 2):>8} "
              f"{fmt(w['pytorch']['decode_speed_mu_over_mu_decoder'], 2):>8}")


if __name__ == "__main__":
    sys.exit(main())
