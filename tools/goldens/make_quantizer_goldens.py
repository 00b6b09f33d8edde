#!/usr/bin/env python3
"""Goldens for Encore's weight quantizers (ek_quantize_rows): llama.cpp's reference rounding for Q8_0, Q4_0, Q4_1,
Q5_0 and Q5_1.

Writes Tests/EncoreTests/Fixtures/gguf/quantizer.gguf: for each type a tensor `<type>.input` (F32 [rows, 96])
and `<type>` holding the `gguf` Python package's `gguf.quants.quantize` of it (bit-exact with ggml-quants.c's
quantize_row_*_ref). Encore must produce the same bytes. Rows include zeros, one large outlier per block,
all-equal values and negative-only values. Deterministic (fixed seed). Run from the repository root:

    python3 -m venv /work/venv-llama && /work/venv-llama/bin/pip install numpy gguf==0.19.0
    /work/venv-llama/bin/python tools/goldens/make_quantizer_goldens.py
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # _gguf_common from any working directory
from _gguf_common import finish_gguf  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "../../Tests/EncoreTests/Fixtures/gguf/quantizer.gguf")


def main():
    rng = np.random.default_rng(4242)
    x = (rng.standard_normal((6, 96)) * 0.5).astype(np.float32)
    x[1, :] = 0.0                     # all zeros: d = 0
    x[2, 5] = 9.0                     # one outlier
    x[2, 40] = -7.5
    x[3, :] = 0.25                    # all equal
    x[4, :] = -np.abs(x[4, :])        # negative only
    x[5, :] = np.round(x[5, :] * 8) / 8   # many exact ties after scaling
    w = gguf.GGUFWriter(OUT, "encore-quantizer-test")
    w.add_string("encore.purpose", "quantizer goldens")
    for name, qtype in [("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1), ("q5_0", Q.Q5_0), ("q5_1", Q.Q5_1)]:
        w.add_tensor(name + ".input", x)
        w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)
    finish_gguf(w)
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
