#!/usr/bin/env python3
"""Goldens for Encore's GGUF tensor reader and dequantization kernels.

Writes Tests/EncoreTests/Fixtures/gguf/quant_types.gguf: for every ggml type Encore reads (F32, F16, BF16,
Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, Q5_0, Q5_1) a tensor `<type>` holding quantized data, and beside it `<type>.expected`,
the F32 values that the `gguf` Python package's reference `gguf.quants.dequantize` gives for those bytes.
Types the package can quantize are quantized from random floats; K-quants are random bytes with sane f16
scales (every bit pattern of the quants is then exercised). Shapes are odd on purpose (3-D, few rows).
Deterministic (fixed seed); helpers from _gguf_common.py. Run from the repository root:

    python3 -m venv /work/venv-llama && /work/venv-llama/bin/pip install numpy gguf==0.19.0
    /work/venv-llama/bin/python tools/goldens/make_gguf_quant_goldens.py
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize, dequantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # _gguf_common from any working directory
from _gguf_common import finish_gguf, random_kquant  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "../../Tests/EncoreTests/Fixtures/gguf/quant_types.gguf")


def main():
    rng = np.random.default_rng(20260)
    w = gguf.GGUFWriter(OUT, "encore-quant-test")
    w.add_string("encore.purpose", "dequantization goldens")
    for name, qtype, shape in [
        ("f32", Q.F32, (2, 3, 64)),
        ("f16", Q.F16, (3, 64)),
        ("bf16", Q.BF16, (3, 64)),
        ("q8_0", Q.Q8_0, (2, 3, 64)),
        ("q4_0", Q.Q4_0, (3, 96)),
        ("q4_1", Q.Q4_1, (3, 96)),
        ("q4_k", Q.Q4_K, (3, 256)),
        ("q5_k", Q.Q5_K, (2, 512)),
        ("q6_k", Q.Q6_K, (3, 256)),
        ("q5_0", Q.Q5_0, (3, 96)),        # added in session 17: last, so the tensors above keep their bytes
        ("q5_1", Q.Q5_1, (3, 96)),
    ]:
        x = (rng.standard_normal(shape) * 0.7 + 0.1).astype(np.float32)
        if qtype == Q.F32:
            raw = x
        elif qtype == Q.F16:
            raw = x.astype(np.float16)
        elif qtype in (Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1):
            raw = quantize(x, qtype)
        else:                                     # K-quants: random bytes, f16 scales in [0.001, 0.05]
            raw = random_kquant(rng, qtype, shape, scale=(0.001, 0.05))
        expected = dequantize(raw, qtype).astype(np.float32).reshape(shape)
        if qtype == Q.F32:
            w.add_tensor(name, raw)
        else:
            w.add_tensor(name, raw, raw_dtype=qtype)
        w.add_tensor(name + ".expected", expected)
    finish_gguf(w)
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
