#!/usr/bin/env python3
"""Qwen2 and Phi-3 GGUF fixtures and llama.cpp goldens for Encore's GGUF path of those architectures.

Takes the tiny transformers checkpoints made by make_hf_decoder_goldens.py (Fixtures/hf_decoders/qwen2, phi3),
writes them as GGUF files the way llama.cpp's convert_hf_to_gguf.py lays them out (names, metadata keys; no Q/K
row permutation for these architectures; Phi-3's fused attn_qkv and ffn_up = [gate; up]), with a 128-token
SentencePiece-style vocabulary, and records llama.cpp's logits and greedy continuations:

  Fixtures/gguf_families/qwen2.gguf, phi3.gguf, golden.json, golden.safetensors

Phi-3 is written without its LongRoPE factor tensors: llama.cpp chooses the long or short factors by the context
size it was given (n_ctx), transformers (and Encore) by the sequence length, so the two agree only without them.
As a check of the layout itself, llama.cpp's logits on qwen2.gguf are compared with transformers' goldens of the
same weights (must agree to ~1e-5: F32 weights, F32 KV cache).

Shared helpers (safetensors, GGUF metadata, llama.cpp settings) are in _gguf_common.py. Deterministic: a rerun
gives the committed files bit for bit. Run from the repository root (needs llama-cpp-python 0.3.36 built from
source and gguf 0.19.0, see make_smollm2_goldens.py; after make_hf_decoder_goldens.py):
    /work/venv-llama/bin/python tools/goldens/make_gguf_family_goldens.py
"""
import json
import os
import sys

import numpy as np
import gguf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # _gguf_common from any working directory
from _gguf_common import (FIX, add_llama_hparams, add_spm_vocab, all_logits, finish_gguf, greedy,  # noqa: E402
                          load_llama, read_safetensors, write_safetensors)

HF = os.path.join(FIX, "hf_decoders")
OUT = os.path.join(FIX, "gguf_families")


def write_gguf(arch, hf_dir, path):
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    W = read_safetensors(os.path.join(hf_dir, "model.safetensors"))
    C, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or C // H
    w = gguf.GGUFWriter(path, arch)
    w.add_name("encore tiny checkpoint")   # a name with "phi3" in it makes llama.cpp want Phi-3 special tokens
    add_llama_hparams(w, cfg["max_position_embeddings"], C, cfg["num_hidden_layers"], cfg["intermediate_size"], H, Hkv,
                      cfg["rms_norm_eps"], cfg["rope_parameters"]["rope_theta"], D)
    if arch == "phi3":
        w.add_sliding_window(0)
    # llama.cpp looks the newline byte token up: <0x0A> stands in for one filler piece.
    add_spm_vocab(w, cfg["vocab_size"], [0x0A])
    w.add_tensor("token_embd.weight", W["model.embed_tokens.weight"])
    for i in range(cfg["num_hidden_layers"]):
        p, h = f"blk.{i}.", f"model.layers.{i}."
        w.add_tensor(p + "attn_norm.weight", W[h + "input_layernorm.weight"])
        w.add_tensor(p + "ffn_norm.weight", W[h + "post_attention_layernorm.weight"])
        w.add_tensor(p + "attn_output.weight", W[h + "self_attn.o_proj.weight"])
        w.add_tensor(p + "ffn_down.weight", W[h + "mlp.down_proj.weight"])
        if arch == "phi3":
            w.add_tensor(p + "attn_qkv.weight", W[h + "self_attn.qkv_proj.weight"])
            w.add_tensor(p + "ffn_up.weight", W[h + "mlp.gate_up_proj.weight"])
        else:
            for n in "qkv":
                w.add_tensor(p + f"attn_{n}.weight", W[h + f"self_attn.{n}_proj.weight"])
                w.add_tensor(p + f"attn_{n}.bias", W[h + f"self_attn.{n}_proj.bias"])
            w.add_tensor(p + "ffn_gate.weight", W[h + "mlp.gate_proj.weight"])
            w.add_tensor(p + "ffn_up.weight", W[h + "mlp.up_proj.weight"])
    w.add_tensor("output_norm.weight", W["model.norm.weight"])
    if "lm_head.weight" in W:
        w.add_tensor("output.weight", W["lm_head.weight"])
    finish_gguf(w)


def main():
    os.makedirs(OUT, exist_ok=True)
    record, tensors = {}, {}
    for arch in ("qwen2", "phi3"):
        path = os.path.join(OUT, f"{arch}.gguf")
        write_gguf(arch, os.path.join(HF, arch), path)
        llm = load_llama(path, 64)
        golden = json.load(open(os.path.join(HF, arch, "golden.json")))
        prompts = golden["prompts"]
        for i, p in enumerate(prompts):
            tensors[f"{arch}.prompt{i}.logits"] = all_logits(llm, p)
        gen = golden["generation"]["prompt"]
        out = greedy(llm, gen, 30)
        record[arch] = {"prompts": prompts, "generation": {"prompt": gen, "tokens": out}}
        if arch == "qwen2":     # the layout check: llama.cpp on this GGUF == transformers on the HF folder
            hf = read_safetensors(os.path.join(HF, arch, "golden.safetensors"))
            for i in range(len(prompts)):
                a, b = tensors[f"{arch}.prompt{i}.logits"], hf[f"prompt{i}.logits"]
                err = np.abs(a - b).max() / np.abs(b).max()
                print(f"{arch} prompt {i}: llama.cpp vs transformers relative error {err:.2e}")
                assert err < 1e-4, "GGUF layout does not reproduce transformers"
            assert out == golden["generation"]["tokens"], "llama.cpp greedy differs from transformers"
        print(arch, out[:10])
    write_safetensors(os.path.join(OUT, "golden.safetensors"), tensors)
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
