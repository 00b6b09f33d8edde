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

Run (needs llama-cpp-python 0.3.36 built from source and gguf, see make_smollm2_goldens.py; after
make_hf_decoder_goldens.py):
    /work/venv-llama/bin/python tools/goldens/make_gguf_family_goldens.py
"""
import json
import os
import struct

import numpy as np
import gguf

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "../.."))
HF = os.path.join(ROOT, "Tests/EncoreTests/Fixtures/hf_decoders")
OUT = os.path.join(ROOT, "Tests/EncoreTests/Fixtures/gguf_families")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype=np.float32).reshape(v["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_gguf(arch, hf_dir, path):
    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    W = read_safetensors(os.path.join(hf_dir, "model.safetensors"))
    C, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or C // H
    w = gguf.GGUFWriter(path, arch)
    w.add_name("encore tiny checkpoint")   # a name with "phi3" in it makes llama.cpp want Phi-3 special tokens
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(C)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_rope_dimension_count(D)
    if arch == "phi3":
        w.add_sliding_window(0)
    V = cfg["vocab_size"]
    # llama.cpp looks the newline byte token up: <0x0A> stands in for one filler piece.
    tokens = ["<unk>", "<s>", "</s>", "<0x0A>"] + [f"\u2581t{i}" for i in range(V - 4)]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * V)
    w.add_token_types([2, 3, 3, 6] + [1] * (V - 4))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
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
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    from llama_cpp import Llama
    os.makedirs(OUT, exist_ok=True)
    record, tensors = {}, {}
    for arch in ("qwen2", "phi3"):
        path = os.path.join(OUT, f"{arch}.gguf")
        write_gguf(arch, os.path.join(HF, arch), path)
        llm = Llama(model_path=path, n_ctx=64, n_batch=64, n_ubatch=64, logits_all=True, type_k=0, type_v=0,
                    flash_attn=False, n_threads=2, seed=0, verbose=False)
        golden = json.load(open(os.path.join(HF, arch, "golden.json")))
        prompts = golden["prompts"]
        for i, p in enumerate(prompts):
            llm.reset()
            llm.eval(p)
            tensors[f"{arch}.prompt{i}.logits"] = np.array(llm.scores[: len(p)], dtype=np.float32)
        gen = golden["generation"]["prompt"]
        llm.reset()
        llm.eval(gen)
        out = []
        for _ in range(30):
            t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(t)
            llm.eval([t])
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
