#!/usr/bin/env python3
"""Tiny Llama GGUFs whose head is tied to a quantized token embedding, and llama.cpp's logits on them.

Checks Encore's `--keep-quantized` path where the embedding table stays in its blocks (row lookups dequantize
only the rows they need) and the tied head runs the quantized GEMV on the same blocks, as llama.cpp does:

  Tests/EncoreTests/Fixtures/tiny_llama/tied-q4.gguf                 Q4_0 token_embd (tied head, no output.weight);
                                                                     Q4_0/Q8_0/Q4_1 attention and gate/up,
                                                                     Q6_K/Q4_K/Q5_K ffn_down
  Tests/EncoreTests/Fixtures/tiny_llama/golden-tied-q4.safetensors   llama.cpp logits of every position of the
                                                                     prompts of golden.json (prompt<i>.logits), and
                                                                     the fp32 numpy reference (prompt<i>.fp32_logits)
  Tests/EncoreTests/Fixtures/tiny_llama/q5.gguf                      Q8_0 token_embd (tied head), Q5_0/Q5_1
                                                                     matrices: the mix of llama.cpp's Q4_K_M files of
                                                                     small models, whose rows are not multiples of 256
  Tests/EncoreTests/Fixtures/tiny_llama/golden-q5.safetensors        as golden-tied-q4.safetensors, for q5.gguf

Same shapes, prompts and llama.cpp settings as make_smollm2_goldens.py's tiny models (F32 KV cache, flash
attention off; the shared code is in _gguf_common.py). Deterministic (fixed seed). Run from the repository root:
    /work/venv-llama/bin/python tools/goldens/make_tied_quant_goldens.py
"""
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # _gguf_common from any working directory
from _gguf_common import (FIX, TINY, add_tiny_llama_tensors, all_logits, finish_gguf, load_llama,  # noqa: E402
                          numpy_forward, tiny_llama_writer, write_safetensors)


# name: (seed, token_embd type = the tied head, per-layer (attention, gate/up, down) types)
MODELS = {
    "tied-q4": (3, Q.Q4_0, [(Q.Q4_0, Q.Q4_0, Q.Q6_K), (Q.Q8_0, Q.Q4_1, Q.Q4_K), (Q.Q4_1, Q.Q8_0, Q.Q5_K)]),
    # session 17: Q5_0/Q5_1 everywhere, a Q8_0 head, as llama.cpp's Q4_K_M files of small models
    "q5": (5, Q.Q8_0, [(Q.Q5_0, Q.Q5_1, Q.Q5_0), (Q.Q5_1, Q.Q5_0, Q.Q5_1), (Q.Q5_0, Q.Q5_0, Q.Q5_1)]),
}


def write_tied(path, name):
    """<name>.gguf: the tied-head tiny Llama of MODELS[name] (no output.weight)."""
    seed, embd_type, plans = MODELS[name]
    rng = np.random.default_rng(seed)
    w = tiny_llama_writer(path, f"encore-tiny-llama-{name}")
    add_tiny_llama_tensors(w, rng, embd_type, 1.0, plans)
    finish_gguf(w)


def goldens(out, prompts, name, path):
    llm = load_llama(path, TINY["ctx"])
    tensors = {}
    for i, p in enumerate(prompts):
        tensors[f"prompt{i}.logits"] = all_logits(llm, p)
        tensors[f"prompt{i}.fp32_logits"] = numpy_forward(path, p)
        err = np.abs(tensors[f"prompt{i}.logits"] - tensors[f"prompt{i}.fp32_logits"]).max() / np.abs(tensors[f"prompt{i}.fp32_logits"]).max()
        print(f"{name} prompt {i}: llama.cpp vs fp32 numpy relative error {err:.2e}")
    write_safetensors(os.path.join(out, f"golden-{name}.safetensors"), tensors)
    print(name, os.path.getsize(path), "bytes")


def main():
    out = os.path.join(FIX, "tiny_llama")
    prompts = json.load(open(os.path.join(out, "golden.json")))["prompts"]
    for name in MODELS:
        path = os.path.join(out, f"{name}.gguf")
        write_tied(path, name)
        goldens(out, prompts, name, path)


if __name__ == "__main__":
    main()
