#!/usr/bin/env python3
"""llama.cpp peer (llama-cpp-python's low-level C API): times one GGUF model, or quantizes a GGUF.

Decoder-only models (Llama family, e.g. SmolLM2): the prompt goes through ``llama_decode`` in one batch
(logits of the last position only), then one token per step; greedy argmax in numpy. Encoder-decoder models
(T5 GGUF): ``llama_encode`` on the input, then the decoder from ``llama_model_decoder_start_token``.
Library defaults are kept otherwise (mmap on, flash attention "auto", f16 KV cache); n_threads =
n_threads_batch = --threads; n_batch = n_ubatch = the longest input, so every prompt is one batch.

Usage (prints the JSON described in _common.py on stdout):

    /work/venv-llama/bin/python bench/peers/llamacpp_peer.py --gguf models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --threads 2 --input-tokens 128,512 --output-tokens 64 --reps 2
    # requantize with llama.cpp's own quantizer (f32, bf16, q8_0, q4_0, q4_1, ...):
    /work/venv-llama/bin/python bench/peers/llamacpp_peer.py --quantize SRC.gguf DST.gguf q8_0
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import llama_cpp as L  # noqa: E402

# llama_ftype values (include/llama.h)
FTYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q4_k_m": 15, "bf16": 32}


def quantize(src: str, dst: str, kind: str) -> int:
    if kind not in FTYPES:
        print(f"llamacpp_peer.py: unknown type '{kind}' (known: {', '.join(FTYPES)})", file=sys.stderr)
        return 2
    L.llama_backend_init()
    p = L.llama_model_quantize_default_params()
    p.ftype = FTYPES[kind]
    p.nthread = os.cpu_count() or 2
    p.allow_requantize = True       # e.g. SmolLM2's Q4_1 file -> F32 / Q8_0 copies
    tmp = dst + ".tmp"
    rc = L.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(p))
    if rc != 0:
        print(f"llamacpp_peer.py: llama_model_quantize({src} -> {kind}) failed with {rc}", file=sys.stderr)
        return 1
    os.replace(tmp, dst)
    return 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--quantize":
        if len(sys.argv) != 5:
            print("usage: llamacpp_peer.py --quantize SRC.gguf DST.gguf TYPE", file=sys.stderr)
            return 2
        return quantize(*sys.argv[2:5])
    ap = C.worker_args(__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--name", help="model name in the JSON (default: the file name)")
    args = ap.parse_args()
    if not Path(args.gguf).is_file():
        ap.error(f"--gguf: {args.gguf} not found")
    log = C.log_stderr("llama.cpp")

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(args.gguf.encode(), mp)
    if not model:
        raise SystemExit(f"llama.cpp could not load {args.gguf}")
    longest = max(args.input_tokens)
    cp = L.llama_context_default_params()
    cp.n_ctx = longest + args.output_tokens + 16
    cp.n_batch = cp.n_ubatch = max(longest, 32)
    cp.n_threads = cp.n_threads_batch = args.threads
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        raise SystemExit("llama.cpp could not create a context")
    vocab = L.llama_model_get_vocab(model)
    V = L.llama_vocab_n_tokens(vocab)
    enc_dec = bool(L.llama_model_has_encoder(model))
    start = L.llama_model_decoder_start_token(model) if enc_dec else -1
    if enc_dec and start < 0:
        start = L.llama_vocab_bos(vocab)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(max(longest, 1), 0, 1)

    def fill(tokens, pos0):
        batch.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            batch.token[i] = t
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == len(tokens) - 1

    def argmax():
        return int(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(V,)).argmax())

    def step(tokens, pos0):
        fill(tokens, pos0)
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            raise SystemExit(f"llama_decode failed with {rc}")
        return argmax()

    def run_once(ids, n_out):
        L.llama_memory_clear(mem, True)
        t0 = C.now()
        if enc_dec:
            fill(ids, 0)
            if L.llama_encode(ctx, batch) != 0:
                raise SystemExit("llama_encode failed")
            tok, pos = step([start], 0), 1
        else:
            tok, pos = step(ids, 0), len(ids)
        t_first = C.now()
        n = 1
        while n < n_out:
            tok = step([tok], pos)
            pos += 1
            n += 1
        return t0, t_first, C.now(), n

    results = C.measure(run_once, args, V, log)
    name = args.name or Path(args.gguf).name
    params = int(L.llama_model_n_params(model))
    for r in results:
        r.update(model=name, params=params)
    C.emit({"system": "llama.cpp", "version": f"llama-cpp-python {L.__version__}", "threads": args.threads,
            "gguf": args.gguf, "file_bytes": os.path.getsize(args.gguf), "encoder_decoder": enc_dec,
            "results": results})
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
