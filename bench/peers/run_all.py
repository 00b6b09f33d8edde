#!/usr/bin/env python3
"""Every peer and Encore in turn, on the same checkpoints and threads: Encore's ratio to the best peer.

Rows are model x precision x metric (first-token latency after --input-tokens, decode tokens/s over
--output-tokens, peak RSS). Each engine runs in a fresh process (one warm-up, median of --reps inside); the
order of the engines is reversed every other round; values are medians over rounds. "Best peer" is, per metric,
the best median among the other engines at the same precision; the ratio is Encore's median over it
(TTFT and RSS: < 1 is better for Encore; decode: > 1 is better for Encore).

Models (random weights; speed does not depend on the values):
  llama  SmolLM2-360M shape (32 layers, width 960, 15/5 heads, SwiGLU 2560, vocab 49,152; 361.8M), ONE set of
         weights written by bench/peers/checkpoints.py as an HF folder, CTranslate2 folders and llama GGUFs
         (f32, bf16, q8_0, q4_0, q4_k_m by llama.cpp's quantizer)
  t5     the 347M T5 of BASELINES.md (20 + 10 layers, d_model 1024, 6 x 64 heads, ReLU d_ff 4096), same sets
  mu     Mu-330M (the released config); Encore's and PyTorch's (bench/peers/mu_torch.py, reference
         architecture with a KV cache) own random weights of the same shapes; PyTorch at fp32, bf16 (weights and
         compute in torch.bfloat16) and int8 (quantize_dynamic, per-channel qint8 nn.Linear) beside Encore's
         --decode-weights bf16 / int8 (--small: a 4 + 2-layer, width-256 Mu made by `encore init`)
Engines: encore (`encore bench --model ...` on the HF folder with `--decode-weights bf16|int8|q8_0|q4_0` (int8 and
q8_0/q4_0 rows: also `--prompt-weights int8`, int8 GEMMs in prompt passes as CTranslate2's, PyTorch's and llama.cpp's
int8 (q8_0/q4_0: over the blocks as stored, llama.cpp's arithmetic); bf16 rows `--prompt-weights decode`, no fp32 copy
resident, as the peers hold only their format), and on the F32 / q8_0 / q4_0 GGUFs, `--keep-quantized` for the
blocks, q8_0/q4_0 with `--prompt-weights int8`; q4_k_m on its own mix of Q4_K/Q6_K/Q5_0 blocks, with the default
prompt weights (auto: blocks since session 19) and widened to fp32), hf (transformers generate, fp32/bf16), ct2
(CTranslate2 float32/int8), llama.cpp (llama-cpp-python, GGUF f32/bf16/q8_0/q4_0/q4_k_m; T5 through llama_encode),
pytorch (Mu fp32/bf16/int8). Encore runs its default `--kv-cache auto`: an f16 KV cache beside bf16 and quantized
decode weights (llama.cpp's cache type), fp32 beside fp32 weights and for T5. Llama and T5 get the same rows, but for a
few: Llama's other cache type (an "f16-KV" fp32 row, "f32-KV" bf16 / q8_0 / q4_0 rows), and for T5 an "int8-enc" q8_0 GGUF row (the encoder requantized to int8 rows). Precisions: fp32, bf16, int8 (CT2 int8, llama.cpp
q8_0; Encore int8 and q8_0), q4_0 and q4_k_m (llama.cpp). An engine that cannot run a row prints n/a with the reason, and is
measured automatically once it can.

Usage (from the repository root):

    swift build -c release --product encore --static-swift-stdlib   # as scripts/bench.sh builds it
    python3 bench/peers/run_all.py [--quick]          # --quick: 1 round, 1 rep, 16 output tokens
    python3 bench/peers/run_all.py --rounds 2 --models llama,t5,mu --precisions fp32,int8
    python3 bench/peers/run_all.py --quick --small --models t5 --input-tokens 32 \
        --checkpoints /tmp/encore-peers-t5small                  # smoke test of the script: tiny T5, < 1 min
    python3 bench/peers/run_all.py --precisions fp32,bf16 --blas-twin openblas
                                                                 # + a twin of each Encore row on OpenBLAS

Encore rows run Encore's default library for fp32 GEMMs (ENCORE_BLAS=auto: Intel MKL on an Intel CPU when
`bash scripts/fetch-mkl.sh` or `pip install mkl` installed it, else OpenBLAS); --encore-blas openblas pins OpenBLAS.

Checkpoints are made on first use under --checkpoints (default /tmp/encore-peers; ~8 GB; ~5 min). The JSON
(every sample, medians, ratios) goes to bench/results/run_all-<UTC time>.json unless --write-json says where.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _driver import (HERE, REPO, encore_bench_cmd, encore_binary, fmt, log, median, result_at, run,  # noqa: E402
                     show)

MODELS = ("llama", "t5", "mu")
PRECISIONS = ("fp32", "bf16", "int8", "q4_0", "q4_k_m")
ENGINES = ("encore", "hf", "ct2", "llama.cpp", "pytorch")
TARGETS = {  # issue 5: Encore / best peer at the same precision
    ("fp32", "ttft"): "<= 1.0", ("int8", "ttft"): "<= 1.0", ("bf16", "ttft"): "<= 0.8",
    ("fp32", "decode"): ">= 1.0", ("bf16", "decode"): ">= 1.5", ("int8", "decode"): ">= 1.5",
    ("q4_0", "decode"): ">= 1.2", ("fp32", "rss"): "<= 1.0", ("bf16", "rss"): "<= 1.0", ("int8", "rss"): "<= 1.0",
    ("q4_0", "rss"): "<= 1.0", ("q4_k_m", "decode"): ">= 1.2", ("q4_k_m", "rss"): "<= 1.0",
}


MU_SMALL = {"model_type": "mu", "n_encoder_layer": 4, "n_decoder_layer": 2, "n_embd": 256, "qkv_embd": 192,
            "is_interleaved": False, "hidden_dim": 1024, "n_head": 6, "n_kv_head": 3, "block_size": 1024,
            "dropout": 0.1, "rope_theta": 10000, "rope_factor": 1.0, "pad_token_id": 0, "vocab_size": 8192,
            "bos_token_id": 1, "eos_token_id": 2}


def mu_small(enc, ck: Path) -> Path:
    """--small: a Mu folder of MU_SMALL's shape (encore init, random weights); PyTorch builds the same shape."""
    folder = ck / "mu-small"
    if not (folder / "model.safetensors").is_file() or json.loads((folder / "config.json").read_text()) != MU_SMALL:
        ck.mkdir(parents=True, exist_ok=True)
        cfg = ck / "mu-small-config.json"
        cfg.write_text(json.dumps(MU_SMALL, indent=1) + "\n")
        subprocess.run([enc, "init", "--config", str(cfg), "--out", str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder


def entries(args, ck: Path):
    """(model, precision, engine, label, command) for every row."""
    enc = args.encore
    L, N, T, R = [args.input_tokens], args.output_tokens, args.threads, args.reps
    io = ["--threads", str(T), "--input-tokens", str(args.input_tokens), "--output-tokens", str(N), "--reps", str(R)]
    py, lpy = args.python, args.llama_python
    out = []

    def add(model, prec, engine, label, cmd):
        row = {"model": model, "precision": prec, "engine": engine, "label": label, "cmd": cmd}
        if engine == "encore":   # --encore-blas, whatever ENCORE_BLAS the caller's shell has
            row["env"] = {"ENCORE_BLAS": args.encore_blas}
        out.append(row)
        if engine == "encore" and args.blas_twin:
            # a twin row with Encore's fp32 GEMMs on the other library: most of an fp32 or bf16 prompt pass, the
            # prompt attention of an int8 or 4-bit one
            twin = {"openblas": "OpenBLAS", "auto": "auto"}.get(args.blas_twin.lower(), "MKL")
            out.append({**row, "label": f"{label} +{twin}", "env": {"ENCORE_BLAS": args.blas_twin}})

    # Encore's --kv-cache auto (its default) keeps an f16 cache beside bf16 and quantized weights, as llama.cpp does
    # by default, and fp32 beside fp32 weights: Llama's twin rows show the other choice (T5 keeps fp32)
    kv16, kv32 = ["--kv-cache", "f16"], ["--kv-cache", "f32"]
    for m in ("llama", "t5"):
        hf = str(ck / f"{m}-hf")
        add(m, "fp32", "encore", "encore", encore_bench_cmd(enc, hf, L, N, T, R))
        if m == "llama":
            add(m, "fp32", "encore", "encore f16-KV", encore_bench_cmd(enc, hf, L, N, T, R, kv16))
        add(m, "fp32", "hf", "hf", [py, str(HERE / "hf_peer.py"), "--model", hf, "--dtype", "fp32"] + io)
        add(m, "fp32", "ct2", "ct2", [py, str(HERE / "ct2_peer.py"), "--model", str(ck / f"{m}-ct2"),
                                      "--compute-type", "float32"] + io)
        add(m, "fp32", "encore", "encore f32 GGUF", encore_bench_cmd(enc, str(ck / f"{m}-f32.gguf"), L, N, T, R))
        add(m, "fp32", "llama.cpp", "llama.cpp f32", [lpy, str(HERE / "llamacpp_peer.py"), "--gguf",
                                                     str(ck / f"{m}-f32.gguf")] + io)
        dec = ["--prompt-weights", "decode"]   # no fp32 copy resident: the decode format alone, widened per matrix
        add(m, "bf16", "encore", "encore bf16", encore_bench_cmd(enc, hf, L, N, T, R, ["--decode-weights", "bf16"] + dec))
        if m == "llama":
            add(m, "bf16", "encore", "encore bf16 f32-KV", encore_bench_cmd(enc, hf, L, N, T, R,
                                                                            ["--decode-weights", "bf16"] + dec + kv32))
        add(m, "bf16", "hf", "hf", [py, str(HERE / "hf_peer.py"), "--model", hf, "--dtype", "bf16"] + io)
        add(m, "bf16", "llama.cpp", "llama.cpp bf16", [lpy, str(HERE / "llamacpp_peer.py"), "--gguf",
                                                      str(ck / f"{m}-bf16.gguf")] + io)
        add(m, "int8", "encore", "encore int8", encore_bench_cmd(enc, hf, L, N, T, R, ["--decode-weights", "int8",
                                                                                "--prompt-weights", "int8"]))
        # Q8_0 blocks: prompt passes on the int8 GEMM over the blocks as stored (llama.cpp's q8_0 arithmetic)
        i8 = ["--prompt-weights", "int8"]
        add(m, "int8", "encore", "encore q8_0", encore_bench_cmd(enc, hf, L, N, T, R, ["--decode-weights", "q8_0"] + i8))
        if m == "llama":   # an fp32 cache: twice the KV bytes of the llama.cpp row
            add(m, "int8", "encore", "encore q8_0 f32-KV", encore_bench_cmd(enc, hf, L, N, T, R,
                                                                         ["--decode-weights", "q8_0"] + i8 + kv32))
        add(m, "int8", "encore", "encore q8_0 GGUF", encore_bench_cmd(enc, str(ck / f"{m}-q8_0.gguf"), L, N, T, R,
                                                                      ["--keep-quantized"] + i8))
        if m == "llama":
            add(m, "int8", "encore", "encore q8_0 GGUF f32-KV", encore_bench_cmd(enc, str(ck / f"{m}-q8_0.gguf"), L, N,
                                                                             T, R, ["--keep-quantized"] + i8 + kv32))
        if m == "t5":   # the encoder in int8 rows of its own (requantized from the blocks), the decoder on the blocks
            add(m, "int8", "encore", "encore q8_0 GGUF int8-enc", encore_bench_cmd(enc, str(ck / f"{m}-q8_0.gguf"), L, N, T,
                                                                               R, ["--keep-quantized"] + i8 +
                                                                               ["--encoder-weights", "int8"]))
        add(m, "int8", "ct2", "ct2 int8", [py, str(HERE / "ct2_peer.py"), "--model", str(ck / f"{m}-ct2-int8"),
                                           "--compute-type", "int8"] + io)
        add(m, "int8", "llama.cpp", "llama.cpp q8_0", [lpy, str(HERE / "llamacpp_peer.py"), "--gguf",
                                                      str(ck / f"{m}-q8_0.gguf")] + io)
        # Q4_0 blocks: prompt passes on the same GEMM (nibbles − 8, llama.cpp's q8_0 activations), as llama.cpp's q4_0
        add(m, "q4_0", "encore", "encore q4_0 GGUF", encore_bench_cmd(enc, str(ck / f"{m}-q4_0.gguf"), L, N, T, R,
                                                                      ["--keep-quantized"] + i8))
        if m == "llama":
            add(m, "q4_0", "encore", "encore q4_0 GGUF f32-KV", encore_bench_cmd(enc, str(ck / f"{m}-q4_0.gguf"), L, N, T,
                                                                             R, ["--keep-quantized"] + i8 + kv32))
        add(m, "q4_0", "encore", "encore q4_0", encore_bench_cmd(enc, hf, L, N, T, R, ["--decode-weights", "q4_0"] + i8))
        add(m, "q4_0", "llama.cpp", "llama.cpp q4_0", [lpy, str(HERE / "llamacpp_peer.py"), "--gguf",
                                                      str(ck / f"{m}-q4_0.gguf")] + io)
        # llama.cpp's Q4_K_M mix (Q4_K / Q6_K, and Q5_0 where a row is not a multiple of 256): the blocks as stored,
        # with the default prompt weights (auto: blocks since session 19, as llama.cpp's prompt passes: the blocks the
        # block GEMM reads as stored, Q6_K widened per matrix)
        add(m, "q4_k_m", "encore", "encore q4_k_m GGUF", encore_bench_cmd(enc, str(ck / f"{m}-q4_k_m.gguf"), L, N, T, R,
                                                                          ["--keep-quantized"]))
        # every matrix widened to fp32 per tile (the default before session 19)
        add(m, "q4_k_m", "encore", "encore q4_k_m GGUF widened", encore_bench_cmd(enc, str(ck / f"{m}-q4_k_m.gguf"), L, N,
                                                                                  T, R, ["--keep-quantized",
                                                                                         "--prompt-weights", "f32"]))
        add(m, "q4_k_m", "llama.cpp", "llama.cpp q4_k_m", [lpy, str(HERE / "llamacpp_peer.py"), "--gguf",
                                                          str(ck / f"{m}-q4_k_m.gguf")] + io)
    # Mu: Encore's --decode-weights bf16 / int8 beside PyTorch's bf16 model and quantize_dynamic int8 (mu_torch.py)
    mu_shape = ["--preset", "mu-330m"]
    torch_mu = [py, str(HERE / "mu_torch.py"), "--models", "mu", "--json", "-"] + io
    if args.small and "mu" in args.models:
        folder = mu_small(enc, ck)
        mu_shape = ["--model", str(folder)]
        torch_mu += ["--config", str(folder / "config.json")]
    mu_enc = [enc, "bench"] + mu_shape + ["--models", "mu", "--input-tokens", str(args.input_tokens),
                                          "--output-tokens", str(N), "--threads", str(T), "--reps", str(R), "--json",
                                          "--no-limits"]
    add("mu", "fp32", "encore", "encore", mu_enc)
    add("mu", "fp32", "pytorch", "pytorch", torch_mu)
    add("mu", "bf16", "encore", "encore bf16", mu_enc + ["--decode-weights", "bf16", "--prompt-weights", "decode"])
    add("mu", "bf16", "pytorch", "pytorch bf16", torch_mu + ["--precision", "bf16"])
    add("mu", "int8", "encore", "encore int8", mu_enc + ["--decode-weights", "int8", "--prompt-weights", "int8"])
    add("mu", "int8", "pytorch", "pytorch int8", torch_mu + ["--precision", "int8"])
    return [e for e in out if e["model"] in args.models and e["precision"] in args.precisions
            and e["engine"] in args.engines]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help="1 round, 1 rep, 16 output tokens (a smoke run)")
    ap.add_argument("--rounds", type=int, help="fresh-process rounds, order reversed each round (default 2; --quick 1)")
    ap.add_argument("--reps", type=int, help="timed repetitions inside each process (default 2; --quick 1)")
    ap.add_argument("--input-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, help="generated tokens (default 64; --quick 16)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--checkpoints", type=Path, default=Path("/tmp/encore-peers"))
    ap.add_argument("--small", action="store_true", help="tiny checkpoints (a smoke test of this script)")
    ap.add_argument("--encore", help="Encore binary (default $ENCORE_BIN or .build/release/encore)")
    ap.add_argument("--python", default="/work/venv/bin/python", help="Python with torch, transformers, ctranslate2")
    ap.add_argument("--llama-python", default="/work/venv-llama/bin/python", help="Python with llama-cpp-python")
    ap.add_argument("--encore-blas", default="auto", metavar="auto|openblas|mkl|LIBMKL_RT",
                    help="ENCORE_BLAS for the Encore rows (default auto, Encore's own default: Intel MKL on an Intel "
                         "CPU where one is installed, e.g. by `bash scripts/fetch-mkl.sh`, else OpenBLAS; "
                         "CTranslate2 and PyTorch run their fp32 GEMMs on MKL)")
    ap.add_argument("--blas-twin", metavar="openblas|auto|mkl|LIBMKL_RT",
                    help="add a twin of each Encore row run with ENCORE_BLAS set to this, labelled ' +OpenBLAS', "
                         "' +auto' or ' +MKL'")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per process")
    ap.add_argument("--write-json", type=Path)
    ap.add_argument("--reuse", type=Path, metavar="PREVIOUS.json",
                    help="take the rows measured in an earlier run_all JSON (same lengths and threads) and run only "
                         "the rest, e.g. the n/a rows once Encore supports them; the JSON marks reused rows")
    args = ap.parse_args()
    if args.blas_twin and args.blas_twin.lower() == args.encore_blas.lower():
        ap.error(f"--blas-twin {args.blas_twin} is the Encore rows' own library (--encore-blas {args.encore_blas})")
    for name, normal, quick in (("rounds", 2, 1), ("reps", 2, 1), ("output_tokens", 64, 16)):
        if getattr(args, name) is None:   # --quick changes only what was not given explicitly
            setattr(args, name, quick if args.quick else normal)
    for name, allowed in (("models", MODELS), ("precisions", PRECISIONS), ("engines", ENGINES)):
        vals = [v for v in getattr(args, name).split(",") if v]
        bad = [v for v in vals if v not in allowed]
        if bad or not vals:
            ap.error(f"--{name}: unknown {bad}; choose from {', '.join(allowed)}")
        setattr(args, name, vals)
    if min(args.rounds, args.reps, args.threads, args.input_tokens, args.output_tokens - 1) < 1:
        ap.error("--rounds, --reps, --threads, --input-tokens must be >= 1 and --output-tokens >= 2")
    args.encore = encore_binary(args.encore)

    wanted = [m for m in args.models if m in ("llama", "t5")]
    if wanted:
        cmd = [args.python, str(HERE / "checkpoints.py"), "--out", str(args.checkpoints), "--models",
               ",".join(wanted), "--llama-python", args.llama_python] + (["--small"] if args.small else [])
        log(f"checkpoints: {show(cmd)}")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    rows = entries(args, args.checkpoints)
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "OPENBLAS_NUM_THREADS": str(args.threads)}
    started = datetime.datetime.now(datetime.timezone.utc)
    for e in rows:
        e["samples"], e["error"] = [], None
    if args.reuse:
        prev = json.loads(args.reuse.read_text())
        if (prev.get("input_tokens"), prev.get("output_tokens"), prev.get("threads")) != \
                (args.input_tokens, args.output_tokens, args.threads):
            ap.error(f"--reuse: {args.reuse} was measured at other lengths or threads")
        # same row and the same command (the binary or interpreter path aside): a changed command is run again
        old_rows = {(r["model"], r["precision"], r["label"], tuple(r["cmd"][1:])): r for r in prev.get("rows", [])}
        for e in rows:
            r = old_rows.get((e["model"], e["precision"], e["label"], tuple(e["cmd"][1:])))
            if r and r.get("samples"):
                e["samples"], e["reused_from"] = r["samples"], prev.get("started_utc")
    for rnd in range(args.rounds):
        order = rows if rnd % 2 == 0 else list(reversed(rows))
        for i, e in enumerate(order):
            if e["error"] or e.get("reused_from"):
                continue   # could not run in an earlier round (e.g. n/a for Encore), or reused: not run again
            log(f"round {rnd + 1}/{args.rounds} [{i + 1}/{len(order)}] {e['model']} {e['precision']} {e['label']}")
            data, err = run(e["cmd"], args.timeout, {**env, **e.get("env", {})})
            if err:
                e["error"] = err
                log(f"  n/a: {err}")
                continue
            r = result_at(data, args.input_tokens) or data["results"][0]
            e["samples"].append({"ttft_ms": r.get("ttft_ms"), "decode_tokens_per_s": r.get("decode_tokens_per_s"),
                                 "peak_rss_mb": r.get("peak_rss_mb"), "params": r.get("params"),
                                 "wall_s": data.get("wall_s"), "load_avg": data.get("load_avg_1min_before"),
                                 "version": data.get("version"),
                                 "decode_weights": r.get("decode_weights", data.get("decode_weights")),
                                 "kv_cache": r.get("kv_cache"), "blas": data.get("blas")})
            log(f"  TTFT {r.get('ttft_ms', 0):,.0f} ms, decode {r.get('decode_tokens_per_s', 0):.1f} tok/s, "
                f"peak RSS {r.get('peak_rss_mb', 0):,.0f} MiB ({data.get('wall_s')} s)")

    for e in rows:
        e["median"] = {k: median([s[k] for s in e["samples"]]) for k in ("ttft_ms", "decode_tokens_per_s",
                                                                          "peak_rss_mb")}
    summary = summarize(rows)
    print_tables(args, rows, summary, started)
    out = args.write_json or (REPO / "bench" / "results" / f"run_all-{started:%Y-%m-%dT%H%M}Z.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "run_all", "started_utc": started.isoformat(timespec="seconds"), "threads": args.threads,
        "input_tokens": args.input_tokens, "output_tokens": args.output_tokens, "rounds": args.rounds,
        "reps": args.reps, "checkpoints": str(args.checkpoints), "small": args.small,
        "load_average_end": os.getloadavg(), "summary": summary,
        "rows": [{k: v for k, v in e.items()} for e in rows]}, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


# What Encore's JSON must report as its decode weights for a row to count as that precision.
# "gguf" = `encore bench --keep-quantized`: the GGUF file's own blocks (the q8_0 / q4_0 files of those rows).
FORMATS = {"fp32": ("f32", "fp32"), "bf16": ("bf16",), "int8": ("int8", "q8_0", "gguf"), "q4_0": ("q4_0", "gguf"),
           "q4_k_m": ("gguf",)}

METRICS = (("ttft", "ttft_ms", min, f"TTFT ms"), ("decode", "decode_tokens_per_s", max, "decode tok/s"),
           ("rss", "peak_rss_mb", min, "peak RSS MiB"))


def summarize(rows):
    out = []
    groups = {}
    for e in rows:
        groups.setdefault((e["model"], e["precision"]), []).append(e)
    for (model, prec), es in groups.items():
        peers = [e for e in es if e["engine"] != "encore"]
        for key, field, best_fn, title in METRICS:
            measured = [(e["median"][field], e["label"]) for e in peers if e["median"][field] is not None]
            best = best_fn(measured) if measured else None
            for enc in (e for e in es if e["engine"] == "encore"):
                v = enc["median"][field]
                ran = enc["samples"][-1].get("decode_weights") if enc["samples"] else None
                out.append({"model": model, "precision": prec, "metric": key, "encore_label": enc["label"],
                            "encore_decode_weights": ran, "encore_format_matches": ran in FORMATS[prec],
                            "encore": v, "encore_error": enc["error"], "best_peer": best[1] if best else None,
                            "best_peer_value": best[0] if best else None,
                            "ratio": v / best[0] if v is not None and best else None,
                            "target": TARGETS.get((prec, key))})
    return out


def print_tables(args, rows, summary, started):
    print(f"\n{started:%Y-%m-%d %H:%M} UTC · batch 1, greedy, {args.input_tokens} input -> {args.output_tokens} "
          f"output tokens, {args.threads} threads · medians over {args.rounds} round(s) x {args.reps} rep(s)\n")
    w = max([17] + [len(e["label"]) for e in rows] + [len(s["encore_label"]) + 1 for s in summary])   # label column
    hdr = f"{'model':<6} {'prec':<5} {'engine':<{w}} {'TTFT ms':>10} {'decode tok/s':>13} {'peak RSS MiB':>13}  note"
    print(hdr)
    print("-" * len(hdr))
    for e in rows:
        m = e["median"]
        note = ""
        if e["error"]:
            note = "n/a: " + e["error"]
        elif e["engine"] == "encore" and e["samples"] and e["samples"][-1].get("decode_weights"):
            note = f"decode weights {e['samples'][-1]['decode_weights']}"
            if e["samples"][-1].get("kv_cache"):
                note += f", {e['samples'][-1]['kv_cache']} KV cache"
            blas = e["samples"][-1].get("blas") or ""
            if blas:
                note += ", MKL" if blas.startswith("Intel MKL") else ", OpenBLAS" if blas.startswith("OpenBLAS") else f", {blas}"
        if e.get("reused_from"):
            note = (note + "; " if note else "") + f"from the run of {e['reused_from']}"
        print(f"{e['model']:<6} {e['precision']:<5} {e['label']:<{w}} {fmt(m['ttft_ms'], 0)} "
              f"{fmt(m['decode_tokens_per_s'], 1, 13)} {fmt(m['peak_rss_mb'], 0, 13)}  {note[:110]}")
    print("\nEncore / best peer at the same precision (TTFT, RSS: lower is better; decode: higher is better)\n")
    hdr = f"{'model':<6} {'prec':<5} {'Encore':<{w}} {'metric':<13} {'Encore':>9} {'best peer':>24} {'ratio':>6}  target"
    print(hdr)
    print("-" * len(hdr))
    for s in summary:
        title = {k: t for k, _, _, t in METRICS}[s["metric"]]
        d = 1 if s["metric"] == "decode" else 0
        peer = "no peer" if s["best_peer"] is None else f"{s['best_peer_value']:,.{d}f} {s['best_peer']}"
        ratio = "n/a" if s["ratio"] is None else f"{s['ratio']:.2f}"
        label = s["encore_label"] + ("*" if s["encore"] is not None and not s["encore_format_matches"] else "")
        print(f"{s['model']:<6} {s['precision']:<5} {label:<{w}} {title:<13} "
              f"{fmt(s['encore'], d, 9)} {peer:>24} {ratio:>6}  {s['target'] or ''}")
    if any(s["encore"] is not None and not s["encore_format_matches"] for s in summary):
        print("* Encore read this file but decoded with other weights than the row's precision (its JSON "
              "'decode_weights'; e.g. GGUF blocks dequantized to f32 on load): not a same-precision comparison yet.")


if __name__ == "__main__":
    sys.exit(main())
