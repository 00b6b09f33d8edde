"""Helpers shared by the GGUF golden-file generators in tools/goldens/ (not a script: nothing runs on import).

Used by make_smollm2_goldens.py, make_tied_quant_goldens.py, make_gguf_family_goldens.py,
make_gguf_quantize_goldens.py, make_t5_gguf_goldens.py, make_gguf_quant_goldens.py and make_quantizer_goldens.py.
Each of them puts its own folder first on sys.path, so `from _gguf_common import ...` works from any directory:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _gguf_common import FIX, write_safetensors  # noqa: E402

What is here:
  - safetensors: `read_safetensors` (F32), `write_safetensors` (F32 / I32), no dependency beyond numpy;
  - GGUF writing with the `gguf` package: `add_llama_hparams`, `add_spm_vocab`, `finish_gguf`, `random_kquant`,
    `add_quantized` (gguf.quants.quantize, bit-exact with ggml's quantize_row_*_ref), and the tiny random Llama
    (`TINY`, `tiny_llama_writer`, `add_tiny_llama_tensors`) of make_smollm2_goldens.py / make_tied_quant_goldens.py;
  - GGUF reading: `gguf_shape`, `gguf_tensor_f32` (gguf.quants.dequantize);
  - references: llama.cpp through llama-cpp-python (`load_llama`, `all_logits`, `greedy`: F32 KV cache, flash
    attention off, 2 threads) and `numpy_forward`, a plain fp32 numpy Llama over a GGUF's dequantized weights.

Needs numpy and gguf==0.19.0 (llama-cpp-python 0.3.36 only for the llama.cpp helpers, imported when called):
/work/venv-llama has both.
"""
import json
import os
import struct

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../.."))
FIX = os.path.join(ROOT, "Tests/EncoreTests/Fixtures")


# ---------------------------------------------------------------------------------------------- safetensors

def read_safetensors(path):
    """{name: float32 array} of a .safetensors file (u64 header size, JSON header, data); F32 tensors only.

    Raises ValueError naming the tensor if one is not F32. Example: `read_safetensors(hf + "/model.safetensors")`.
    """
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        if v["dtype"] != "F32":
            raise ValueError(f"{path}: {k} is {v['dtype']}, expected F32")
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype=np.float32).reshape(v["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    """Write {name: array} as .safetensors in the dict's order: int32 arrays as I32, anything else as F32.

    The JSON header is compact and space-padded to a multiple of 8 bytes (no __metadata__), so the same tensors
    always give the same bytes. Example: `write_safetensors(out + "/golden.safetensors", {"prompt0.logits": x})`.
    """
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.dtype == np.int32:
            dtype, b = "I32", np.ascontiguousarray(arr).tobytes()
        else:
            dtype, b = "F32", np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------------------------------------- GGUF writing

def add_llama_hparams(w, context_length, n_embd, n_layer, n_ff, n_head, n_head_kv, rms_eps, rope_theta, rope_dim):
    """The `<arch>.*` hyper-parameter keys llama.cpp's convert_hf_to_gguf.py writes for Llama-like models
    (context, embedding, block count, feed-forward, heads, KV heads, RMSNorm epsilon, RoPE base and dimension),
    in that order (the order is part of the file's bytes)."""
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_rope_freq_base(rope_theta)
    w.add_rope_dimension_count(rope_dim)


def add_spm_vocab(w, vocab, byte_values):
    """A placeholder SentencePiece-style (`llama`) vocabulary of `vocab` pieces: `<unk>` `<s>` `</s>` (ids 0, 1, 2),
    one byte token `<0xXX>` per value of `byte_values`, then filler pieces `▁t0`, `▁t1`, … (all scores 0).

    Example: `add_spm_vocab(w, 320, range(256))` (every byte); `add_spm_vocab(w, 128, [0x0A])` (llama.cpp looks the
    newline byte token up, so it must exist)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in byte_values]
    n_bytes = len(tokens) - 3
    tokens += [f"\u2581t{i}" for i in range(vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([2, 3, 3] + [6] * n_bytes + [1] * (vocab - 3 - n_bytes))   # unknown, control, byte, normal
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)


def finish_gguf(w):
    """Write a GGUFWriter's header, key/values and tensors, and close the file."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def random_kquant(rng, qtype, shape, scale=None):
    """Random K-quant bytes (Q4_K, Q5_K or Q6_K) for a float tensor of `shape` (numpy order), as uint8
    [..., shape[-1] / block values * block bytes]; the gguf package cannot quantize K-quants.

    Every quant bit pattern is random; the f16 super-block scales (Q4_K/Q5_K: d and dmin, the first 4 bytes;
    Q6_K: d, bytes 208-209) are drawn uniformly from `scale` = (lo, hi). Default: the small scales of the tiny
    Llama models, (0.0002, 0.0006) for Q4_K/Q5_K and (0.0005, 0.0015) for Q6_K."""
    vals, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    nb = int(np.prod(shape)) // vals
    raw = rng.integers(0, 256, size=(nb, nbytes), dtype=np.uint8)

    def f16(lo, hi):
        return np.asarray(rng.uniform(lo, hi, nb), dtype=np.float16).view(np.uint8).reshape(-1, 2)

    if qtype in (Q.Q4_K, Q.Q5_K):
        lo, hi = scale or (0.0002, 0.0006)
        raw[:, 0:2] = f16(lo, hi)
        raw[:, 2:4] = f16(lo, hi)
    else:
        lo, hi = scale or (0.0005, 0.0015)
        raw[:, 208:210] = f16(lo, hi)
    return raw.reshape(tuple(shape[:-1]) + (shape[-1] // vals * nbytes,))


def add_quantized(w, rng, name, x, qtype):
    """Add float32 `x` to GGUFWriter `w` stored as `qtype`: F32 as is, F16 by numpy's rounding, K-quants as
    `random_kquant` bytes (drawn from `rng`, `x` only gives the shape), anything else (BF16, Q8_0, Q4_0, Q4_1)
    through `gguf.quants.quantize`."""
    if qtype == Q.F32:
        w.add_tensor(name, x)
    elif qtype == Q.F16:
        w.add_tensor(name, x.astype(np.float16))
    elif qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        w.add_tensor(name, random_kquant(rng, qtype, x.shape), raw_dtype=qtype)
    else:
        w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)


# ---------------------------------------------------------------------------------------------- tiny Llama

# The tiny random Llama of make_smollm2_goldens.py (f32.gguf, mixed.gguf) and make_tied_quant_goldens.py.
TINY = dict(vocab=320, n_embd=64, n_head=4, n_kv=2, ffn=256, n_layer=3, ctx=256, theta=10000.0, eps=1e-5)


def tiny_llama_writer(path, name):
    """A GGUFWriter for a `llama` model with TINY's hyper-parameters and a 320-piece vocabulary with all 256 byte
    tokens; the caller adds the tensors (`add_tiny_llama_tensors`) and calls `finish_gguf`."""
    c = TINY
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    add_llama_hparams(w, c["ctx"], c["n_embd"], c["n_layer"], c["ffn"], c["n_head"], c["n_kv"], c["eps"], c["theta"],
                      c["n_embd"] // c["n_head"])
    add_spm_vocab(w, c["vocab"], range(256))
    return w


def add_tiny_llama_tensors(w, rng, embd_type, embd_std, plans, head_type=None):
    """Random weights of the tiny Llama in llama.cpp's names and order, drawn from `rng` (so a seed fixes them).

    token_embd [V, C] ~ N(0, embd_std²) stored as embd_type; per layer i, plans[i] = (attention q/k/v/o type,
    ffn gate/up type, ffn down type), norms 1 + N(0, 0.01) in F32; output_norm; an untied head `output.weight`
    stored as head_type unless it is None (then the head is tied to token_embd)."""
    c = TINY
    d = c["n_embd"] // c["n_head"]

    def mat(rows, cols, std=0.15):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    C, F, V = c["n_embd"], c["ffn"], c["vocab"]
    add_quantized(w, rng, "token_embd.weight", mat(V, C, embd_std), embd_type)
    for i, (qa, qf, qd) in enumerate(plans):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(C)).astype(np.float32))
        add_quantized(w, rng, p + "attn_q.weight", mat(C, C), qa)
        add_quantized(w, rng, p + "attn_k.weight", mat(c["n_kv"] * d, C), qa)
        add_quantized(w, rng, p + "attn_v.weight", mat(c["n_kv"] * d, C), qa)
        add_quantized(w, rng, p + "attn_output.weight", mat(C, C), qa)
        w.add_tensor(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(C)).astype(np.float32))
        add_quantized(w, rng, p + "ffn_gate.weight", mat(F, C), qf)
        add_quantized(w, rng, p + "ffn_up.weight", mat(F, C), qf)
        add_quantized(w, rng, p + "ffn_down.weight", mat(C, F, 0.08), qd)
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(C)).astype(np.float32))
    if head_type is not None:
        add_quantized(w, rng, "output.weight", mat(V, C), head_type)


# ---------------------------------------------------------------------------------------------- GGUF reading

def gguf_shape(t):
    """Shape of a GGUFReader tensor in numpy order (GGUF lists dimensions fastest first), as a list of ints."""
    return [int(d) for d in reversed(t.shape.tolist())]


def gguf_tensor_f32(t):
    """float32 values of a GGUFReader tensor in numpy shape, dequantized by gguf.quants.dequantize (F32: as stored)."""
    return dequantize(t.data, t.tensor_type).astype(np.float32).reshape(gguf_shape(t))


# ---------------------------------------------------------------------------------------------- references

def load_llama(path, n_ctx=64):
    """llama.cpp (llama-cpp-python) on a GGUF file with the goldens' settings: F32 K/V cache (type 0), flash
    attention off, logits for every position, batch = context = n_ctx, 2 threads, seed 0, quiet."""
    from llama_cpp import Llama
    return Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                 type_k=0, type_v=0, flash_attn=False, n_threads=2, seed=0, verbose=False)


def all_logits(llm, tokens):
    """llama.cpp's logits [T, V] (float32) of every position of `tokens` read from position 0."""
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def greedy(llm, tokens, n, eos=None):
    """llama.cpp's n greedy (argmax) tokens after `tokens` read from position 0; stops after `eos` if given."""
    llm.reset()
    llm.eval(tokens)
    out = []
    for _ in range(n):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(t)
        if t == eos:
            break
        llm.eval([t])
    return out


def numpy_forward(path, ids):
    """Logits [T, V] of a llama GGUF in fp32 numpy (weights from gguf.quants.dequantize), read from position 0.

    llama.cpp's "normal" RoPE (adjacent pairs of the stored, permuted Q/K rows), grouped-query attention, SwiGLU,
    tied head when there is no output.weight. The exact reference for Encore's fp32 path on the tiny models."""
    r = gguf.GGUFReader(path)
    W = {t.name: gguf_tensor_f32(t) for t in r.tensors}

    def kv(k, default=None):
        if k not in r.fields:
            return default
        f = r.fields[k]
        return f.parts[f.data[0]][0]

    C, L = int(kv("llama.embedding_length")), int(kv("llama.block_count"))
    H = int(kv("llama.attention.head_count"))
    Hkv = int(kv("llama.attention.head_count_kv", H))
    eps, theta = float(kv("llama.attention.layer_norm_rms_epsilon")), float(kv("llama.rope.freq_base", 10000.0))
    D, n = C // H, len(ids)

    def rms(x, w):
        return (x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps)).astype(np.float32) * w

    def rope_adjacent(x, nh):                      # llama.cpp "normal" RoPE: pairs (2i, 2i+1) of each head
        x = x.reshape(n, nh, D // 2, 2)
        ang = np.arange(n)[:, None] * (theta ** (-np.arange(0, D, 2) / D))[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., 0], x[..., 1]
        return np.stack([a * c - b * s, a * s + b * c], -1).reshape(n, nh * D).astype(np.float32)

    x = W["token_embd.weight"][ids]                                          # [T, C]
    mask = np.triu(np.full((n, n), -np.inf, np.float32), 1)
    for l in range(L):
        p = f"blk.{l}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope_adjacent(h @ W[p + "attn_q.weight"].T, H)                  # [T, H*D]
        k = rope_adjacent(h @ W[p + "attn_k.weight"].T, Hkv)                # [T, Hkv*D]
        v = h @ W[p + "attn_v.weight"].T
        o = np.zeros((n, H * D), np.float32)
        for hh in range(H):
            g = hh // (H // Hkv)
            sc = q[:, hh * D:(hh + 1) * D] @ k[:, g * D:(g + 1) * D].T / np.float32(np.sqrt(D)) + mask
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            o[:, hh * D:(hh + 1) * D] = sc @ v[:, g * D:(g + 1) * D]
        x = x + o @ W[p + "attn_output.weight"].T
        m = rms(x, W[p + "ffn_norm.weight"])
        gt, up = m @ W[p + "ffn_gate.weight"].T, m @ W[p + "ffn_up.weight"].T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ W[p + "ffn_down.weight"].T
    return (rms(x, W["output_norm.weight"]) @ W.get("output.weight", W["token_embd.weight"]).T).astype(np.float32)
