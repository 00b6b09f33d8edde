#!/usr/bin/env python3
"""A tiny Llama GGUF whose head is tied to a quantized token embedding, and llama.cpp's logits on it.

Checks Encore's `--keep-quantized` path where the embedding table stays in its blocks (row lookups dequantize
only the rows they need) and the tied head runs the quantized GEMV on the same blocks, as llama.cpp does:

  Tests/EncoreTests/Fixtures/tiny_llama/tied-q4.gguf                 Q4_0 token_embd (tied head, no output.weight);
                                                                     Q4_0/Q8_0/Q4_1 attention and gate/up,
                                                                     Q6_K/Q4_K/Q5_K ffn_down
  Tests/EncoreTests/Fixtures/tiny_llama/golden-tied-q4.safetensors   llama.cpp logits of every position of the
                                                                     prompts of golden.json (prompt<i>.logits), and
                                                                     the fp32 numpy reference (prompt<i>.fp32_logits)

Same shapes, prompts and llama.cpp settings as make_smollm2_goldens.py's tiny models (F32 KV cache, flash
attention off). Deterministic (fixed seed). Run from the repository root:
    /work/venv-llama/bin/python tools/goldens/make_tied_quant_goldens.py
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

sys.path.insert(0, os.path.dirname(__file__))
from make_smollm2_goldens import FIX, TINY, all_logits, load_llama, numpy_forward, random_kquant, write_safetensors  # noqa: E402


def write_tied(path, seed):
    c = TINY
    rng = np.random.default_rng(seed)
    d = c["n_embd"] // c["n_head"]
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("encore-tiny-llama-tied-q4")
    w.add_context_length(c["ctx"])
    w.add_embedding_length(c["n_embd"])
    w.add_block_count(c["n_layer"])
    w.add_feed_forward_length(c["ffn"])
    w.add_head_count(c["n_head"])
    w.add_head_count_kv(c["n_kv"])
    w.add_layer_norm_rms_eps(c["eps"])
    w.add_rope_freq_base(c["theta"])
    w.add_rope_dimension_count(d)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581t{i}" for i in range(c["vocab"] - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (c["vocab"] - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def mat(rows, cols, std=0.15):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def put(name, x, qtype):
        if qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
            w.add_tensor(name, random_kquant(rng, qtype, *x.shape), raw_dtype=qtype)
        else:
            w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)

    C, F, V = c["n_embd"], c["ffn"], c["vocab"]
    put("token_embd.weight", mat(V, C, 1.0), Q.Q4_0)
    plans = [(Q.Q4_0, Q.Q4_0, Q.Q6_K), (Q.Q8_0, Q.Q4_1, Q.Q4_K), (Q.Q4_1, Q.Q8_0, Q.Q5_K)]
    for i, (qa, qf, qd) in enumerate(plans):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(C)).astype(np.float32))
        put(p + "attn_q.weight", mat(C, C), qa)
        put(p + "attn_k.weight", mat(c["n_kv"] * d, C), qa)
        put(p + "attn_v.weight", mat(c["n_kv"] * d, C), qa)
        put(p + "attn_output.weight", mat(C, C), qa)
        w.add_tensor(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(C)).astype(np.float32))
        put(p + "ffn_gate.weight", mat(F, C), qf)
        put(p + "ffn_up.weight", mat(F, C), qf)
        put(p + "ffn_down.weight", mat(C, F, 0.08), qd)
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(C)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = os.path.join(FIX, "tiny_llama")
    prompts = json.load(open(os.path.join(out, "golden.json")))["prompts"]
    path = os.path.join(out, "tied-q4.gguf")
    write_tied(path, 3)
    llm = load_llama(path, TINY["ctx"])
    tensors = {}
    for i, p in enumerate(prompts):
        tensors[f"prompt{i}.logits"] = all_logits(llm, p)
        tensors[f"prompt{i}.fp32_logits"] = numpy_forward(path, p)
        err = np.abs(tensors[f"prompt{i}.logits"] - tensors[f"prompt{i}.fp32_logits"]).max() / np.abs(tensors[f"prompt{i}.fp32_logits"]).max()
        print(f"prompt {i}: llama.cpp vs fp32 numpy relative error {err:.2e}")
    write_safetensors(os.path.join(out, "golden-tied-q4.safetensors"), tensors)
    print("tied-q4", os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
