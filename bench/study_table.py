#!/usr/bin/env python3
"""Markdown tables from `encore bench --json-out FILE` (the paper's study): Mu against its decoder-only twin.

    python3 bench/study_table.py bench/results/2026-11-29-study-lengths.json [more.json ...]

One row per (input, output, decode weights): both models' TTFT (with Mu's encode / first decoder step split),
decode tok/s, end-to-end time, peak RSS, cache bytes, GFLOP per sequence; then the measured ratios beside the
ratios the counted FLOPs and weight bytes predict, and the fractions of the machine's ceilings measured in the
same run. Standard library only.
"""

import json
import sys


def load(paths):
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        yield p, d


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    for path, d in load(argv[1:]):
        m = d.get("machine") or {}
        print(f"<!-- {path} -->")
        if m:
            peak = f" (FMA peak {m['fma_peak_gflop_per_s']:.0f})" if m.get("fma_peak_gflop_per_s") else ""
            print(f"machine (same run): read {m['read_gb_per_s']:.1f} GB/s, BLAS GEMM {m['gemm_gflop_per_s']:.0f} GFLOP/s{peak}, "
                  f"{d.get('threads')} threads, {d.get('blas')}\n")
        rows = d["results"]
        key = lambda r: (r.get("decode_weights", "f32"), r["input_tokens"], r["output_tokens"])
        pairs = {}
        for r in rows:
            pairs.setdefault(key(r), {})[r["model"]] = r
        print("| input → output | mu TTFT (encode + 1st step) | twin TTFT | TTFT ratio (FLOPs predict) "
              "| mu decode | twin decode | decode ratio (bytes predict) | e2e speed-up | GFLOP/seq mu / twin "
              "| peak RSS mu / twin | cache mu / twin |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        fractions = []
        for k in sorted(pairs):
            p = pairs[k]
            if "mu" not in p or "mu_decoder" not in p:
                continue
            a, b = p["mu"], p["mu_decoder"]
            fmt_ = "" if k[0] == "f32" else f" [{k[0]}]"
            ttft = a["ttft_ms"] / b["ttft_ms"]
            pred_ttft = a["prefill_gflop"] / b["prefill_gflop"]
            dec = a["decode_tokens_per_s"] / b["decode_tokens_per_s"]
            pred_dec = b["decode_weight_bytes_per_token"] / a["decode_weight_bytes_per_token"]
            first = a["ttft_ms"] - a["encode_ms"]
            seq = f"{a.get('sequence_gflop', float('nan')):.0f} / {b.get('sequence_gflop', float('nan')):.0f}"
            print(f"| {k[1]} → {k[2]}{fmt_} | {a['ttft_ms']:,.0f} ms ({a['encode_ms']:,.0f} + {first:,.0f}) "
                  f"| {b['ttft_ms']:,.0f} ms | {ttft:.2f} ({pred_ttft:.2f}) | {a['decode_tokens_per_s']:.1f} tok/s "
                  f"| {b['decode_tokens_per_s']:.1f} tok/s | {dec:.2f}× ({pred_dec:.2f}×) "
                  f"| {b['e2e_ms'] / a['e2e_ms']:.2f}× | {seq} | {a['peak_rss_mb']:,.0f} / {b['peak_rss_mb']:,.0f} MiB "
                  f"| {a['cache_mb']:.1f} / {b['cache_mb']:.1f} MiB |")
            for r in (a, b):
                if "prefill_fraction_of_gemm" in r:
                    fractions.append((r["model"], k, r["prefill_fraction_of_gemm"], r["decode_fraction_of_read_bw"],
                                      r["prefill_gflop_per_s"], r["decode_weight_gb_per_s"]))
        if fractions:
            print("\n| model | input → output | prompt pass GFLOP/s (of measured GEMM) | decode weight GB/s (of measured read) |")
            print("|---|---|---:|---:|")
            for name, k, fg, fb, g, bw in fractions:
                print(f"| {name} | {k[1]} → {k[2]} | {g:.0f} ({100 * fg:.0f}%) | {bw:.1f} ({100 * fb:.0f}%) |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
