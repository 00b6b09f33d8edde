#!/usr/bin/env python3
"""Goldens for `encore quantize` writing GGUF (Llama family): llama.cpp's bytes, and llama.cpp running Encore's files.

For each (source, format) below the script
  1. runs `encore quantize --model SRC --out TMP.gguf --format FMT` (the CLI built from this checkout);
  2. computes what llama.cpp's own tools would store, independently of Encore: the fp32 weights of the source
     (the `gguf` package's reader for a GGUF source; the safetensors for a Hugging Face folder, with
     convert_hf_to_gguf.py's names, Q/K row permutation `LlamaModel.permute`, tied head dropped, Llama 3
     `rope_freqs`), every 2-D `.weight` whose rows are whole blocks through `gguf.quants.quantize` (bit-exact with
     ggml's quantize_row_*_ref), the rest F32 — and asserts that Encore's file holds exactly those bytes, names,
     shapes and types (RoPE factor tensors: values within 1e-6);
  3. loads Encore's file in llama.cpp (llama-cpp-python, F32 KV cache, flash attention off) and records its logits
     for fixed prompts; checks llama.cpp reads the metadata (layers, heads, vocabulary) as Encore wrote it;
  4. runs `encore score` on Encore's file and compares its log-probabilities of a continuation with llama.cpp's
     (printed; asserted within SCORE_TOLERANCE nats: llama.cpp rounds the activations to Q8_0 blocks for quantized
     matrices, to bf16 for BF16 and to f16 for F16, Encore's prompt pass multiplies fp32 activations by the
     dequantized weights; the tiny random models' logits span ~±10), and `encore generate
     --keep-quantized` (decoding from the file's blocks) against llama.cpp's greedy tokens (agreement printed).

Writes Tests/EncoreTests/Fixtures/gguf_quantize/golden.json (per output: tensor name → [type, shape, FNV-1a-64 of
the expected bytes]; RoPE factor values) and golden.safetensors (llama.cpp's logits `<case>.prompt<i>.logits`).
The Swift test (GGUFQuantizeTests) quantizes the same sources, checks the hashes and compares Encore's logits on its
own file with llama.cpp's.

With --smollm2 PATH (scripts/fetch-smollm2.sh), also quantizes SmolLM2-135M (Q4_1 GGUF) to Q8_0 and Q4_0 and prints
llama.cpp's vs Encore's log-probabilities of a chat continuation on each file, and llama.cpp's greedy text
(not stored).

Shared helpers (safetensors, GGUF reading, llama.cpp settings/logits/greedy) are in _gguf_common.py. Deterministic
for a given encore binary: a rerun gives the committed files bit for bit. Run from the repository root (needs
llama-cpp-python 0.3.36 built from source and gguf 0.19.0 in /work/venv-llama; ~70 s with --smollm2):
    swift build --scratch-path .build && \\
    /work/venv-llama/bin/python tools/goldens/make_gguf_quantize_goldens.py --encore .build/debug/encore \\
        [--smollm2 models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # _gguf_common from any working directory
from _gguf_common import (FIX, ROOT, all_logits, gguf_shape, gguf_tensor_f32, greedy, load_llama,  # noqa: E402
                          read_safetensors, write_safetensors)

OUT = os.path.join(FIX, "gguf_quantize")
TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1}

# (case name, source relative to Fixtures, format, run in llama.cpp)
CASES = [
    ("tiny_q8_0", "tiny_llama/f32.gguf", "q8_0", True),
    ("tiny_q4_0", "tiny_llama/f32.gguf", "q4_0", True),
    ("tiny_q4_1", "tiny_llama/f32.gguf", "q4_1", True),
    ("tiny_bf16", "tiny_llama/f32.gguf", "bf16", True),
    ("tiny_f16", "tiny_llama/f32.gguf", "f16", True),
    ("tinyhf_q4_0", "tiny_llama/hf", "q4_0", True),      # the same weights from Hugging Face names: same bytes
    ("qwen2_q8_0", "hf_decoders/qwen2", "q8_0", True),
    ("llama3_q4_1", "hf_decoders/llama3", "q4_1", True),
    ("phi3_q8_0", "hf_decoders/phi3", "q8_0", False),    # llama.cpp picks LongRoPE factors by n_ctx, not length
]


# max |Δ log-prob| (nats) between `encore score` and llama.cpp on the same file, by format
SCORE_TOLERANCE = {"f32": 1e-3, "f16": 1e-2, "bf16": 5e-2, "q8_0": 0.12, "q4_0": 0.2, "q4_1": 0.2}


def fnv1a64(b):
    h = 0xcbf29ce484222325
    a = np.frombuffer(b, dtype=np.uint8)
    for x in a.tolist():
        h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff
    return "%016x" % h


def permute(w, n_head, n_head_kv):
    """convert_hf_to_gguf.py's LlamaModel.permute (numpy)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def source_tensors(src):
    """(name, fp32 array) in the order llama.cpp's tools would write them."""
    if src.endswith(".gguf"):
        r = gguf.GGUFReader(src)
        out = []
        for t in r.tensors:
            assert t.tensor_type == Q.F32
            out.append((t.name, gguf_tensor_f32(t)))
        return out
    cfg = json.load(open(os.path.join(src, "config.json")))
    W = read_safetensors(os.path.join(src, "model.safetensors"))
    arch = cfg["model_type"]
    H, Hkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    out = [("token_embd.weight", W["model.embed_tokens.weight"])]
    names = [("input_layernorm", "attn_norm"), ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
             ("self_attn.v_proj", "attn_v"), ("self_attn.qkv_proj", "attn_qkv"), ("self_attn.o_proj", "attn_output"),
             ("post_attention_layernorm", "ffn_norm"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
             ("mlp.gate_up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")]
    for i in range(cfg["num_hidden_layers"]):
        for h, g in names:
            for suffix in (".weight", ".bias"):
                k = f"model.layers.{i}.{h}{suffix}"
                if k not in W:
                    continue
                w = W[k]
                if arch == "llama" and h == "self_attn.q_proj":
                    w = permute(w, H, H)
                if arch == "llama" and h == "self_attn.k_proj":
                    w = permute(w, H, Hkv)
                out.append((f"blk.{i}.{g}{suffix}", w))
    out.append(("output_norm.weight", W["model.norm.weight"]))
    if "lm_head.weight" in W and not cfg.get("tie_word_embeddings", False):
        out.append(("output.weight", W["lm_head.weight"]))
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    if rp.get("rope_type") == "llama3":     # LlamaModel.generate_extra_tensors, in float32
        base = np.float32(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)))
        freqs = np.float32(1.0) / (base ** (np.arange(0, D, 2, dtype=np.float32) / np.float32(D)))
        factor, lo, hi, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
        lw, hw = old / lo, old / hi
        f = []
        for fr in freqs:
            wl = 2 * np.pi / fr
            if wl < hw:
                f.append(1)
            elif wl > lw:
                f.append(factor)
            else:
                s = (old / wl - lo) / (hi - lo)
                f.append(1 / ((1 - s) / factor + s))
        out.append(("rope_freqs.weight", np.array(f, dtype=np.float32)))
    if rp.get("rope_type") == "longrope":
        out.append(("rope_factors_long.weight", np.array(rp["long_factor"], dtype=np.float32)))
        out.append(("rope_factors_short.weight", np.array(rp["short_factor"], dtype=np.float32)))
    return out


def expected(src, fmt):
    qt = TYPES[fmt]
    block = gguf.GGML_QUANT_SIZES[qt][0]
    rows = []
    for name, w in source_tensors(src):
        if w.ndim == 2 and name.endswith(".weight") and w.shape[1] % block == 0:
            rows.append((name, qt, w, quantize(w.astype(np.float32), qt).tobytes()))
        else:
            rows.append((name, Q.F32, w, w.astype(np.float32).tobytes()))
    return rows


def check_file(path, rows):
    r = gguf.GGUFReader(path)
    got = {t.name: t for t in r.tensors}
    assert [t.name for t in r.tensors] == [n for n, *_ in rows], f"{path}: tensor names/order differ"
    record = {}
    for name, qt, w, want in rows:
        t = got[name]
        assert t.tensor_type == qt, f"{name}: type {t.tensor_type.name}, expected {qt.name}"
        shape = gguf_shape(t)
        assert shape == list(w.shape), f"{name}: shape {shape} vs {list(w.shape)}"
        b = np.array(t.data).tobytes()
        if name.startswith("rope_"):
            v = np.frombuffer(b, dtype=np.float32)
            assert np.allclose(v, w, rtol=1e-6, atol=0), f"{name}: {v} vs {w}"
            record[name] = [qt.name, shape, [float(x) for x in w]]
        else:
            assert b == want, f"{path}: tensor {name} bytes differ from gguf.quants.quantize"
            record[name] = [qt.name, shape, fnv1a64(want)]
    return r, record


def logprobs(logits, targets):
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    return np.array([logits[i, t] - lse[i] for i, t in enumerate(targets)])


def encore_score(encore, path, inp, tgt):
    out = subprocess.run([encore, "score", "--model", path, "--input-ids", ",".join(map(str, inp)),
                          "--target-ids", ",".join(map(str, tgt)), "--json"], check=True, capture_output=True, text=True)
    return np.array(json.loads(out.stdout)["logprobs"])


def compare_score(encore, llm, path, prompt, label):
    """llama.cpp's log-probabilities of prompt[k:] given prompt[:k] vs `encore score` on the same file."""
    k = max(1, len(prompt) // 2)
    lg = all_logits(llm, prompt)
    want = logprobs(lg[k - 1: len(prompt) - 1], prompt[k:])
    got = encore_score(encore, path, prompt[:k], prompt[k:])
    err = float(np.abs(got - want).max())
    print(f"  {label}: encore score vs llama.cpp log-probs, max |Δ| = {err:.2e} nats over {len(want)} tokens "
          f"(max |logit| {np.abs(lg).max():.1f})")
    return err


def compare_greedy(encore, llm, path, prompt, label, n=16):
    """llama.cpp's n greedy tokens after prompt vs `encore generate --keep-quantized` on the same file."""
    want = greedy(llm, prompt, n)
    out = subprocess.run([encore, "generate", "--model", path, "--keep-quantized", "--input-ids", ",".join(map(str, prompt)),
                          "--max-tokens", str(n), "--json"], check=True, capture_output=True, text=True)
    got = json.loads(out.stdout)["ids"][:n]
    eos = llm.token_eos()
    if eos in want:                              # Encore stops at the model's EOS (included in its ids or not)
        want = want[: want.index(eos) + 1]
        got = got[: len(want)]
        if len(got) == len(want) - 1:
            got = got + [eos]
    same = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
    print(f"  {label}: encore generate --keep-quantized agrees with llama.cpp's greedy for {same}/{len(want)} tokens")
    if same < len(want):
        print(f"    llama.cpp {want}\n    encore    {got}")
    return same


def prompts_for(src):
    if "tiny_llama" in src:
        return json.load(open(os.path.join(FIX, "tiny_llama/golden.json")))["prompts"][:2]
    return json.load(open(os.path.join(src, "golden.json")))["prompts"][:2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encore", default=os.path.join(ROOT, ".build/debug/encore"))
    ap.add_argument("--smollm2", default=None)
    args = ap.parse_args()
    encore = os.path.abspath(args.encore)
    os.makedirs(OUT, exist_ok=True)
    golden, logits = {"cases": {}}, {}
    tmp = tempfile.mkdtemp(prefix="encore-quantize-")
    hashes = {}
    for case, rel, fmt, run in CASES:
        src = os.path.join(FIX, rel)
        path = os.path.join(tmp, case + ".gguf")
        subprocess.run([encore, "quantize", "--model", src, "--out", path, "--format", fmt], check=True)
        rows = expected(src, fmt)
        reader, record = check_file(path, rows)
        hashes[case] = record
        print(f"{case}: {len(rows)} tensors bit-identical to gguf.quants.quantize")
        entry = {"source": rel, "format": fmt, "tensors": record, "prompts": prompts_for(src)}
        if run:
            llm = load_llama(path)
            arch = reader.fields["general.architecture"].contents()
            assert llm.n_vocab() == rows[0][2].shape[0], "llama.cpp reads another vocabulary size"
            for i, p in enumerate(entry["prompts"]):
                logits[f"{case}.prompt{i}.logits"] = all_logits(llm, p)
            err = compare_score(encore, llm, path, entry["prompts"][1], f"{case} ({arch})")
            assert err <= SCORE_TOLERANCE[fmt], f"{case}: Encore and llama.cpp disagree by {err} nats"
            entry["greedy_agreement"] = compare_greedy(encore, llm, path, entry["prompts"][0], f"{case} ({arch})")
            entry["llama_cpp"] = True
            del llm
        golden["cases"][case] = entry
    assert hashes["tinyhf_q4_0"] == hashes["tiny_q4_0"], "HF and GGUF sources of the same weights give different files"
    write_safetensors(os.path.join(OUT, "golden.safetensors"), logits)
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print("wrote", os.path.relpath(OUT, ROOT))

    if args.smollm2:
        text = ("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
                "The capital of France is Paris, a city known for its museums and cafes.<|im_end|>\n")
        for fmt in ("q8_0", "q4_0"):
            path = os.path.join(tmp, f"smollm2-{fmt}.gguf")
            subprocess.run([encore, "quantize", "--model", args.smollm2, "--out", path, "--format", fmt], check=True)
            llm = load_llama(path, n_ctx=128)
            prompt = llm.tokenize(text.encode(), add_bos=False, special=True)
            compare_score(encore, llm, path, prompt, f"SmolLM2 {fmt}")
            question = llm.tokenize(text.split("The capital")[0].encode(), add_bos=False, special=True)
            compare_greedy(encore, llm, path, question, f"SmolLM2 {fmt}")
            llm.reset()
            out = llm.create_completion(text.split("The capital")[0], max_tokens=16, temperature=0)
            print(f"  llama.cpp greedy on Encore's SmolLM2 {fmt}: {out['choices'][0]['text']!r}")
            del llm


if __name__ == "__main__":
    main()
