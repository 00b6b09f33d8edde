#!/usr/bin/env python3
"""PyTorch peer for `encore bench`: the reference Mu architecture with a KV cache, and its decoder-only twin.

A compact re-implementation of microsoft/encoder-decoder-slm's ``Mu`` (``modeling_mu.py``,
``mu_utils.py``) using the reference parameter names, so its state_dict loads into the reference ``Mu``
with ``strict=True``. Unlike the reference's ``generate`` (which re-runs the whole decoder and re-projects
the cross-attention K/V every step) it encodes once, projects the cross-attention K/V once per request
and keeps a decoder self-attention KV cache. ``mu_decoder`` is the matched decoder-only baseline: N blocks
shaped like Mu's encoder blocks, made causal, with the tied head; N is chosen so that its parameter
count is closest to Mu's (31 blocks, 329.8M, for the 330M config).

Measured per model, each in a fresh process (batch 1, greedy, random input ids, no EOS stop, random N(0, 0.02)
weights; one warm-up, then the median over --reps), at --precision fp32 (default), bf16 (every parameter, the
KV caches and all compute in torch.bfloat16) or int8 (torch.ao.quantization.quantize_dynamic: per-channel qint8
weights for every nn.Linear, the tied head included; activations quantized per tensor at run time; embedding and
norms fp32). The JSON then also holds the CPU path torch takes (``cpu_capability``; ``mkldnn_bf16`` False means
no AVX-512 BF16/AMX, so oneDNN is not used and ATen computes bf16 matmuls in its own widening kernels) and the
converted model's logit error against fp32 on a short request (``logit_rel_err_vs_fp32``).

    encode_ms            Mu: encoder + cross-attention K/V projection (decoder-only: omitted)
    ttft_ms              input ids -> first generated token id (includes the encode)
    decode_tokens_per_s  tokens 2..N over their time
    peak_rss_mb          VmHWM in MiB, reset (/proc/self/clear_refs) after the model is built
    params               parameters, the tied head counted once

Usage:

    /work/venv/bin/python bench/peers/mu_torch.py --threads 2 --input-tokens 512 --output-tokens 64 \\
        --reps 3 --models mu,mu_decoder --json /tmp/mu_torch.json [--precision bf16|int8] [--config config.json]
    # correctness (no timing): against the reference code and/or Encore's golden fixtures
    /work/venv/bin/python bench/peers/mu_torch.py --verify-only --reference /work/mu-ref \\
        --fixtures Tests/EncoreTests/Fixtures/mu

With ``--reference`` (a checkout holding ``src/mu/models``) the model is first checked once against the
reference code (max abs logit difference, greedy tokens); ``--fixtures`` checks the golden fixtures
made by tools/goldens/make_mu_goldens.py. The JSON (``--json OUT``; ``-`` for stdout) has the field
names of ``encore bench --json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class MuCfg:
    """The reference MuConfig fields (defaults = the released 330M model), plus n_layer for mu_decoder."""
    n_encoder_layer: int = 20
    n_decoder_layer: int = 10
    n_embd: int = 1024
    qkv_embd: int | None = 384
    is_interleaved: bool = False
    hidden_dim: int = 4096
    n_head: int = 6
    n_kv_head: int = 3
    block_size: int = 1024
    dropout: float = 0.1
    rope_theta: float = 10000
    rope_factor: float = 1.0
    pad_token_id: int = 0
    vocab_size: int = 32128
    n_layer: int | None = None  # mu_decoder only

    def __post_init__(self):
        if self.qkv_embd is None:
            self.qkv_embd = self.n_embd

    @property
    def head_dim(self):
        return self.qkv_embd // self.n_head

    @classmethod
    def from_json(cls, d: dict) -> "MuCfg":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


PRESETS = {"mu-330m": MuCfg()}


# --------------------------------------------------------------------------------------------------
# Layers (reference names: q_linear/k_linear/v_linear/out_linear, fc1/fc2, ln1/ln2/ln3, weight)


class RMSNorm(nn.Module):
    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg.n_embd, cfg.hidden_dim)
        self.fc2 = nn.Linear(cfg.hidden_dim, cfg.n_embd)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def rope_cos_sin(cfg, seq_len, positions):
    """cos/sin [len(positions), head_dim] exactly as the reference's generate_sin_cos_pos_emb.

    seq_len is the length the reference passes (the full query length), which sets the NTK base when
    rope_factor > 1; positions are the (possibly centred) positions as float32.
    """
    dim, base, f, bs = cfg.head_dim, cfg.rope_theta, cfg.rope_factor, cfg.block_size
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    if f > 1.0:
        seq_len_eff = max(seq_len, bs)
        adj = ((f * seq_len_eff / bs) - (f - 1)) ** (dim / (dim - 2))
        inv_freq = 1.0 / ((base * adj) ** (torch.arange(0, dim, 2).float() / dim))
    freqs = torch.einsum("i,j->ij", positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)      # computed in fp32, applied in the model's dtype (as HF does)
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def attend(q, k, v, cfg, mask):
    """softmax(q k^T / sqrt(d)) v with the reference GQA head mapping, without copying K/V.

    q [B, H, T, d]; k, v [B, Hkv, S, d]; mask None or bool [B, 1, T|1, S] (True = attend).
    Query heads sharing a KV head are folded into the sequence axis (is_interleaved False: query head h
    reads KV head h mod Hkv; True: h // groups). Returns [B, T, H*d].
    """
    B, H, T, d = q.shape
    Hkv = k.shape[1]
    g = H // Hkv
    if g == 1:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        if cfg.is_interleaved:
            qf = q.reshape(B, Hkv, g * T, d)                                   # h = j*g + r
        else:
            qf = q.view(B, g, Hkv, T, d).transpose(1, 2).reshape(B, Hkv, g * T, d)  # h = r*Hkv + j
        if mask is not None and mask.shape[2] > 1:
            mask = mask.repeat(1, 1, g, 1)                                      # rows r*T + i
        of = F.scaled_dot_product_attention(qf, k, v, attn_mask=mask)           # [B, Hkv, g*T, d]
        if cfg.is_interleaved:
            out = of.reshape(B, H, T, d)
        else:
            out = of.view(B, Hkv, g, T, d).transpose(1, 2).reshape(B, H, T, d)
    return out.transpose(1, 2).reshape(B, T, H * d)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        C, A, kv = cfg.n_embd, cfg.qkv_embd, cfg.n_kv_head * cfg.head_dim
        self.q_linear = nn.Linear(C, A)
        self.k_linear = nn.Linear(C, kv)
        self.v_linear = nn.Linear(C, kv)
        self.out_linear = nn.Linear(A, C)

    def heads(self, lin, x, n):
        B, T, _ = x.shape
        return lin(x).view(B, T, n, self.cfg.head_dim).transpose(1, 2)         # [B, n, T, d]

    def encoder_self(self, x, mask):
        """Bidirectional self-attention, centred positions i - (L-1)//2 (the reference encoder)."""
        cfg = self.cfg
        L = x.shape[1]
        q, k, v = self.heads(self.q_linear, x, cfg.n_head), self.heads(self.k_linear, x, cfg.n_kv_head), \
            self.heads(self.v_linear, x, cfg.n_kv_head)
        pos = torch.arange(L, dtype=torch.float) - ((L - 1) // 2)
        cos, sin = rope_cos_sin(cfg, L, pos)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return self.out_linear(attend(q, k, v, cfg, mask))

    def cached_self(self, x, layer_cache, cache):
        """Causal self-attention of new tokens at positions cache.pos .. cache.pos+Tn-1 (positions from 0)."""
        cfg = self.cfg
        Tn = x.shape[1]
        p0, T = cache.pos, cache.pos + Tn
        q, k, v = self.heads(self.q_linear, x, cfg.n_head), self.heads(self.k_linear, x, cfg.n_kv_head), \
            self.heads(self.v_linear, x, cfg.n_kv_head)
        cos, sin = rope_cos_sin(cfg, T, torch.arange(p0, T, dtype=torch.float))
        q = apply_rope(q, cos, sin)
        layer_cache.k[:, :, p0:T] = apply_rope(k, cos, sin)
        layer_cache.v[:, :, p0:T] = v
        return self.out_linear(attend(q, layer_cache.k[:, :, :T], layer_cache.v[:, :, :T], cfg, cache.mask))

    def cross_kv(self, enc_out):
        cfg = self.cfg
        return self.heads(self.k_linear, enc_out, cfg.n_kv_head), self.heads(self.v_linear, enc_out, cfg.n_kv_head)

    def cross(self, x, kv, mask):
        q = self.heads(self.q_linear, x, self.cfg.n_head)
        return self.out_linear(attend(q, kv[0], kv[1], self.cfg, mask))


class EncoderBlock(nn.Module):
    """Reference MuEncoderBlock (ln1, attn, ln2, mlp); causal in the decoder-only twin."""

    def __init__(self, cfg):
        super().__init__()
        self.ln1, self.ln2 = RMSNorm(cfg.n_embd), RMSNorm(cfg.n_embd)
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, mask):
        x = x + self.attn.encoder_self(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))

    def forward_cached(self, x, layer_cache, cache):
        x = x + self.attn.cached_self(self.ln1(x), layer_cache, cache)
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    """Reference MuDecoderBlock (ln1, causal_attn, ln2, cross_attn, ln3, mlp)."""

    def __init__(self, cfg):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = RMSNorm(cfg.n_embd), RMSNorm(cfg.n_embd), RMSNorm(cfg.n_embd)
        self.causal_attn = Attention(cfg)
        self.cross_attn = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward_cached(self, x, layer_cache, cache, cross_kv, enc_mask):
        x = x + self.causal_attn.cached_self(self.ln1(x), layer_cache, cache)
        x = x + self.cross_attn.cross(self.ln2(x), cross_kv, enc_mask)
        return x + self.mlp(self.ln3(x))


# --------------------------------------------------------------------------------------------------
# Caches


class LayerCache:
    def __init__(self, cfg, B, max_len, dtype=torch.float32):
        shape = (B, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = torch.empty(shape, dtype=dtype)                                # RoPE already applied
        self.v = torch.empty(shape, dtype=dtype)


class KVCache:
    """Self-attention cache for n layers; also the ids so far and the key-padding state (keys whose id is
    pad are masked, as the reference derives the mask from the ids, generated ones included)."""

    def __init__(self, cfg, n_layer, B, max_len, dtype=torch.float32):
        self.cfg = cfg
        self.layers = [LayerCache(cfg, B, max_len, dtype) for _ in range(n_layer)]
        self.pos = 0
        self.pad = cfg.pad_token_id
        self.ids = torch.zeros(B, max_len, dtype=torch.long)
        self.key_ok = torch.ones(B, max_len, dtype=torch.bool)
        self.mask = None

    def prepare(self, ids):
        """The ids to run for new ids [B, Tn]. With NTK scaling (rope_factor > 1) the RoPE base depends on
        the current length once it exceeds block_size, and the reference recomputes the whole prefix, so
        every cached hidden state changes: the cache is then invalid and the whole prefix is re-run."""
        T = self.pos + ids.shape[1]
        if self.cfg.rope_factor > 1.0 and T > self.cfg.block_size and self.pos > 0:
            ids = torch.cat([self.ids[:, :self.pos], ids], dim=1)
            self.pos = 0
        return ids

    def begin(self, ids):
        """Set the attention mask for new ids [B, Tn] (causal within the chunk + key padding)."""
        B, Tn = ids.shape
        p0, T = self.pos, self.pos + Tn
        self.ids[:, p0:T] = ids
        self.key_ok[:, p0:T] = ids != self.pad
        keys = self.key_ok[:, :T]
        if Tn == 1:
            self.mask = None if bool(keys.all()) else keys[:, None, None, :]
        else:
            rows = torch.arange(p0, T)[:, None]
            causal = torch.arange(T)[None, :] <= rows                           # [Tn, T]
            self.mask = causal[None, None] & keys[:, None, None, :]             # [B, 1, Tn, T]

    def end(self, Tn):
        self.pos += Tn


# --------------------------------------------------------------------------------------------------
# Models


def count_params(model):
    return sum(p.numel() for p in model.parameters())


class MuTorch(nn.Module):
    """Mu with caches. State-dict names = the reference's (lm_head.weight tied to transformer.wte.weight)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
            "e": nn.ModuleList([EncoderBlock(cfg) for _ in range(cfg.n_encoder_layer)]),
            "ln_e": RMSNorm(cfg.n_embd),
            "h": nn.ModuleList([DecoderBlock(cfg) for _ in range(cfg.n_decoder_layer)]),
            "ln_f": RMSNorm(cfg.n_embd),
        })
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def encode(self, ids):
        """ids [B, L] -> (encoder output after ln_e [B, L, C], key mask for attention or None, mask [B, L])."""
        ok = ids != self.cfg.pad_token_id
        mask = None if bool(ok.all()) else ok[:, None, None, :]
        x = self.transformer.wte(ids)
        for block in self.transformer.e:
            x = block(x, mask)
        return self.transformer.ln_e(x), mask, ok

    def cross_kv(self, enc_out):
        """Cross-attention K/V of every decoder layer, projected once per request."""
        return [block.cross_attn.cross_kv(enc_out) for block in self.transformer.h]

    def new_cache(self, B, max_len):
        return KVCache(self.cfg, self.cfg.n_decoder_layer, B, max_len, self.transformer.wte.weight.dtype)

    def decode(self, ids, cache, cross, enc_mask, last_only=True):
        """New decoder ids [B, Tn] -> logits [B, V] (last position) or [B, Tn, V]."""
        Tn = ids.shape[1]
        ids = cache.prepare(ids)
        cache.begin(ids)
        x = self.transformer.wte(ids)
        for block, lc, kv in zip(self.transformer.h, cache.layers, cross):
            x = block.forward_cached(x, lc, cache, kv, enc_mask)
        cache.end(ids.shape[1])
        x = x[:, -1] if last_only else x[:, -Tn:]
        return self.lm_head(self.transformer.ln_f(x))

    def forward(self, enc_ids, dec_ids):
        """Teacher-forced logits [B, T, V] (one chunk through the same cached path)."""
        enc_out, enc_mask, _ = self.encode(enc_ids)
        cache = self.new_cache(dec_ids.shape[0], dec_ids.shape[1])
        return self.decode(dec_ids, cache, self.cross_kv(enc_out), enc_mask, last_only=False)

    def generate(self, enc_ids, max_new_tokens, bos_token_id=1, eos_token_id=None):
        """Greedy with caches; same output convention as the reference Mu.generate (leading BOS, rows that
        reached EOS padded with EOS, stop when all rows have finished)."""
        B = enc_ids.shape[0]
        enc_out, enc_mask, _ = self.encode(enc_ids)
        cross = self.cross_kv(enc_out)
        cache = self.new_cache(B, max_new_tokens + 1)
        tok = torch.full((B, 1), bos_token_id, dtype=torch.long)
        out = [tok]
        finished = torch.zeros(B, dtype=torch.bool)
        for _ in range(max_new_tokens):
            nxt = self.decode(tok, cache, cross, enc_mask).argmax(-1, keepdim=True)
            if eos_token_id is not None:
                finished |= nxt[:, 0] == eos_token_id
                nxt[finished] = eos_token_id
            out.append(nxt)
            tok = nxt
            if eos_token_id is not None and bool(finished.all()):
                break
        return torch.cat(out, dim=1)


class MuDecoderTorch(nn.Module):
    """Decoder-only twin: wte -> n_layer causal Mu-encoder-shaped blocks -> ln_f -> tied head.
    State-dict names: transformer.wte.weight, transformer.h.{i}.{ln1,ln2,attn,mlp}.*, transformer.ln_f.weight."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
            "h": nn.ModuleList([EncoderBlock(cfg) for _ in range(cfg.n_layer)]),
            "ln_f": RMSNorm(cfg.n_embd),
        })
        self.head = None   # --precision int8: an nn.Linear sharing wte's weight, so quantize_dynamic converts it

    def new_cache(self, B, max_len):
        return KVCache(self.cfg, self.cfg.n_layer, B, max_len, self.transformer.wte.weight.dtype)

    def step(self, ids, cache, last_only=True):
        Tn = ids.shape[1]
        ids = cache.prepare(ids)
        cache.begin(ids)
        x = self.transformer.wte(ids)
        for block, lc in zip(self.transformer.h, cache.layers):
            x = block.forward_cached(x, lc, cache)
        cache.end(ids.shape[1])
        x = x[:, -1] if last_only else x[:, -Tn:]
        if self.head is not None:
            return self.head(self.transformer.ln_f(x))
        return F.linear(self.transformer.ln_f(x), self.transformer.wte.weight)

    def forward(self, ids):
        return self.step(ids, self.new_cache(ids.shape[0], ids.shape[1]), last_only=False)

    def generate(self, prompt, max_new_tokens):
        """Greedy with a KV cache; returns the new tokens [B, max_new_tokens]."""
        cache = self.new_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens)
        tok = self.step(prompt, cache).argmax(-1, keepdim=True)
        out = [tok]
        for _ in range(max_new_tokens - 1):
            tok = self.step(tok, cache).argmax(-1, keepdim=True)
            out.append(tok)
        return torch.cat(out, dim=1)


def block_params(cfg):
    C, A, H = cfg.n_embd, cfg.qkv_embd, cfg.hidden_dim
    kv = cfg.n_kv_head * cfg.head_dim
    attn = (C * A + A) + 2 * (C * kv + kv) + (A * C + C)
    mlp = (C * H + H) + (H * C + C)
    return attn, mlp


def matched_decoder_layers(cfg):
    """Depth of the decoder-only twin whose parameter count is closest to Mu's."""
    attn, mlp = block_params(cfg)
    C, V = cfg.n_embd, cfg.vocab_size
    enc_block = attn + mlp + 2 * C
    dec_block = 2 * attn + mlp + 3 * C
    mu = V * C + cfg.n_encoder_layer * enc_block + cfg.n_decoder_layer * dec_block + 2 * C
    n = (mu - V * C - C) / enc_block
    return min((math.floor(n), math.ceil(n)), key=lambda k: abs(V * C + C + k * enc_block - mu)), mu


def decoder_cfg(cfg):
    n, _ = matched_decoder_layers(cfg)
    return dataclasses.replace(cfg, n_layer=n, n_encoder_layer=n, n_decoder_layer=0)


def random_init(model, seed=0, std=0.02, perturb=False):
    """N(0, std) for Linear and Embedding weights, zero biases, unit norms (as the reference init); with
    perturb, also random biases and norm weights so a mix-up would show in a comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.transformer.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, std, generator=g)
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_(0.0, std, generator=g) if perturb else m.bias.zero_()
            elif isinstance(m, RMSNorm) and perturb:
                m.weight.normal_(0.0, 0.1, generator=g).add_(1.0)


# --------------------------------------------------------------------------------------------------
# Benchmark (one model per process)


def rss_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def rss_peak_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _logits_probe(model, worker, V):
    """Logits of a short fixed request (64 input ids, 8 teacher-forced decoder ids) [8, V] as fp32."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, V, (1, 64), generator=g)
    dec = torch.randint(3, V, (1, 8), generator=g)
    with torch.inference_mode():
        out = model(ids, torch.cat([torch.tensor([[1]]), dec[:, :-1]], 1)) if worker == "mu" else model(
            torch.cat([ids, dec], 1))[:, -8:]
    return out[0].float()


def _release_freed_memory():
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)    # the fp32 weights that were replaced go back to the OS
    except OSError:
        pass


def apply_precision(model, worker, precision, V):
    """Converts `model` in place for --precision and returns what ran (the JSON's precision fields).

    bf16: every parameter (embedding, norms, biases included) and all compute in torch.bfloat16 (the KV caches
    too); RoPE tables computed in fp32 and cast. int8: torch.ao.quantization.quantize_dynamic on every nn.Linear
    (the tied head included) with per-channel qint8 weights; activations quantized per tensor at run time.
    The logits of a short request are compared with the fp32 model's (relative error, max |Δ| / max |logit|).
    """
    if precision == "fp32":
        return {"decode_weights": "f32"}
    ref = _logits_probe(model, worker, V)
    info = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if precision == "bf16":
        model.to(torch.bfloat16)
        # oneDNN's bf16 GEMM needs AVX-512 BF16 / AMX; without them ATen widens bf16 to fp32 in its own kernels
        info["mkldnn_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        info["decode_weights"] = "bf16"
    else:
        import torch.ao.quantization as tq
        if worker == "mu_decoder":
            model.head = nn.Linear(model.cfg.n_embd, V, bias=False)
            model.head.weight = model.transformer.wte.weight
        tq.quantize_dynamic(model, {nn.Linear: tq.per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
        info["quantized_engine"] = torch.backends.quantized.engine
        info["decode_weights"] = "int8"
    _release_freed_memory()
    got = _logits_probe(model, worker, V)
    info["logit_rel_err_vs_fp32"] = round(float((got - ref).abs().max() / ref.abs().max()), 5)
    return info


def bench_worker(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = MuCfg.from_json(json.loads(args.config.read_text())) if args.config else PRESETS[args.preset]
    if args.worker == "mu":
        model = MuTorch(cfg)
    else:
        model = MuDecoderTorch(decoder_cfg(cfg))
    random_init(model)
    model.eval()
    params = count_params(model)
    V, N, L = cfg.vocab_size, args.output_tokens, args.input_tokens
    precision = apply_precision(model, args.worker, args.precision, V)
    g = torch.Generator().manual_seed(1)
    rss_reset()

    def run_once():
        ids = torch.randint(3, V, (1, L), generator=g)
        t0 = time.perf_counter()
        if args.worker == "mu":
            enc_out, enc_mask, _ = model.encode(ids)
            cross = model.cross_kv(enc_out)
            t_enc = time.perf_counter()
            cache = model.new_cache(1, N)
            tok = model.decode(torch.tensor([[1]]), cache, cross, enc_mask).argmax(-1, keepdim=True)
            int(tok)
            t_first = time.perf_counter()
            for _ in range(N - 1):
                tok = model.decode(tok, cache, cross, enc_mask).argmax(-1, keepdim=True)
                int(tok)
        else:
            t_enc = None
            cache = model.new_cache(1, L + N)
            tok = model.step(ids, cache).argmax(-1, keepdim=True)
            int(tok)
            t_first = time.perf_counter()
            for _ in range(N - 1):
                tok = model.step(tok, cache).argmax(-1, keepdim=True)
                int(tok)
        t_end = time.perf_counter()
        return {"encode_ms": None if t_enc is None else (t_enc - t0) * 1e3,
                "ttft_ms": (t_first - t0) * 1e3,
                "decode_tokens_per_s": (N - 1) / (t_end - t_first) if N > 1 else None}

    with torch.inference_mode():
        run_once()  # warm-up
        runs = [run_once() for _ in range(args.reps)]

    def med(key):
        vals = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(vals), 3) if vals else None

    result = {"model": args.worker, "params": params, "input_tokens": L, "output_tokens": N,
              "precision": args.precision, **precision}
    if args.worker == "mu":
        result["encode_ms"] = med("encode_ms")
    result.update({"ttft_ms": med("ttft_ms"), "decode_tokens_per_s": med("decode_tokens_per_s"),
                   "peak_rss_mb": round(rss_peak_mib(), 1)})
    if args.worker == "mu_decoder":
        result["n_layer"] = model.cfg.n_layer
    result["samples"] = runs
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------------
# Verification


def _ref_modules(ref: Path):
    src = ref / "src"
    if not (src / "mu" / "models" / "modeling_mu.py").is_file():
        raise SystemExit(f"mu_torch.py: error: {ref} is not a checkout of microsoft/encoder-decoder-slm "
                         f"(missing src/mu/models/modeling_mu.py)")
    sys.path.insert(0, str(src))
    import mu.models.modeling_mu as modeling_mu
    import mu.models.mu_utils as mu_utils
    return modeling_mu, mu_utils


def _ref_decoder_only(mu_utils, modeling_mu, cfg):
    """The decoder-only twin built from the reference's own MuEncoderBlock (attn.is_causal = True)."""
    rcfg = modeling_mu.MuConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(modeling_mu.MuConfig)})

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict({
                "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
                "h": nn.ModuleList([mu_utils.MuEncoderBlock(rcfg, "cpu") for _ in range(cfg.n_layer)]),
                "ln_f": mu_utils.MuRMSNorm(cfg.n_embd, device="cpu"),
            })
            for b in self.transformer.h:
                b.attn.is_causal = True

        def forward(self, ids):
            mask = ids != cfg.pad_token_id
            x = self.transformer.wte(ids)
            for b in self.transformer.h:
                x = b(x, encoder_mask=mask)
            return self.transformer.ln_f(x) @ self.transformer.wte.weight.T

    return Ref().eval()


def verify_reference(ref: Path, preset: str, log):
    """Our models vs the reference code: strict state-dict load, logits, cached greedy tokens."""
    modeling_mu, mu_utils = _ref_modules(ref)
    ok = True
    g = torch.Generator().manual_seed(5)
    small = MuCfg(n_encoder_layer=3, n_decoder_layer=2, n_embd=40, qkv_embd=32, hidden_dim=80, n_head=4,
                  n_kv_head=2, block_size=8, rope_theta=500, vocab_size=101)
    configs = [(f"{preset} (330M config)", PRESETS[preset], 64, 8, 8, 0.02),
               ("small gqa h%kv", small, 12, 6, 20, 0.3),
               ("small gqa interleaved + NTK x2 (decoder T 12 > block_size 8)",
                dataclasses.replace(small, is_interleaved=True, rope_factor=2.0), 13, 12, 20, 0.3)]
    for name, cfg, L, T, n_new, std in configs:
        ours = MuTorch(cfg)
        random_init(ours, seed=3, std=std, perturb=True)
        ours.eval()
        rcfg = modeling_mu.MuConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(modeling_mu.MuConfig)})
        theirs = modeling_mu.Mu(rcfg, device="cpu")
        theirs.load_state_dict(ours.state_dict(), strict=True)
        theirs.eval()
        assert count_params(ours) == count_params(theirs)
        V = cfg.vocab_size
        enc = torch.randint(3, V, (2, L), generator=g)
        enc[1, L // 2:] = cfg.pad_token_id                                      # a right-padded row
        dec = torch.randint(3, V, (2, T), generator=g)
        dec[:, 0] = 1
        dec[1, T - 2:] = cfg.pad_token_id
        with torch.inference_mode():
            ref_logits = theirs(enc, dec).logits
            r_enc, r_mask = theirs.encode(enc)
            # what the reference's generate sees at step t: the decoder re-run over the prefix dec[:, :t+1]
            ref_prefix = torch.stack([theirs.decode(dec[:, :t + 1], r_enc, r_mask)[:, -1] for t in range(T)], dim=1)
            full = ours(enc, dec)
            # token-by-token through the cache
            enc_out, enc_mask, _ = ours.encode(enc)
            cross = ours.cross_kv(enc_out)
            cache = ours.new_cache(2, T)
            steps = torch.stack([ours.decode(dec[:, t:t + 1], cache, cross, enc_mask) for t in range(T)], dim=1)
            ref_gen = theirs.generate(enc[:1], bos_token_id=1, eos_token_id=2, max_new_tokens=n_new, top_k=1)
            our_gen = ours.generate(enc[:1], n_new, bos_token_id=1, eos_token_id=2)
        scale = ref_logits.abs().max().item()
        d_full = (full - ref_logits).abs().max().item()
        d_step = (steps - ref_prefix).abs().max().item()
        same = torch.equal(ref_gen, our_gen)
        good = d_full <= 1e-4 * max(scale, 1) and d_step <= 1e-4 * max(scale, 1) and same
        ok &= good
        log(f"  mu vs reference, {name}: params {count_params(ours):,}; max |logit diff| full {d_full:.2e}, "
            f"cached steps vs prefix recomputation {d_step:.2e} (max |logit| {scale:.2f}); greedy {n_new} tokens "
            f"{'identical' if same else 'DIFFER'} {'ok' if good else 'FAIL'}")
        del theirs

    for name, cfg in ((f"{preset} twin", decoder_cfg(PRESETS[preset])), ("small twin", decoder_cfg(small))):
        ours = MuDecoderTorch(cfg)
        random_init(ours, seed=4, std=0.02 if cfg.n_embd > 100 else 0.3, perturb=True)
        ours.eval()
        theirs = _ref_decoder_only(mu_utils, modeling_mu, cfg)
        theirs.load_state_dict(ours.state_dict(), strict=True)
        V = cfg.vocab_size
        ids = torch.randint(3, V, (2, 24), generator=g)
        ids[1, 16:] = cfg.pad_token_id
        with torch.inference_mode():
            r = theirs(ids)
            full = ours(ids)
            cache = ours.new_cache(2, 24)
            steps = torch.stack([ours.step(ids[:, t:t + 1], cache) for t in range(24)], dim=1)
            seq = ids[:1, :8].clone()
            for _ in range(8):
                seq = torch.cat([seq, theirs(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
            our_new = ours.generate(ids[:1, :8], 8)
        d_full, d_step = (full - r).abs().max().item(), (steps - r).abs().max().item()
        same = torch.equal(seq[:, 8:], our_new)
        scale = r.abs().max().item()
        good = d_full <= 1e-4 * max(scale, 1) and d_step <= 1e-4 * max(scale, 1) and same
        ok &= good
        log(f"  mu_decoder vs reference blocks, {name} ({cfg.n_layer} layers, {count_params(ours):,} params): "
            f"max |logit diff| full {d_full:.2e}, cached steps {d_step:.2e}; greedy 8 tokens "
            f"{'identical' if same else 'DIFFER'} {'ok' if good else 'FAIL'}")
    return ok


def verify_fixtures(root: Path, log):
    """Our cached implementation vs the golden fixtures (logits, encoder_out, greedy tokens)."""
    from safetensors.torch import load_file
    ok = True
    cases = sorted(p for p in root.iterdir() if (p / "config.json").is_file())
    if not cases:
        raise SystemExit(f"mu_torch.py: error: no fixture cases (*/config.json) under {root}")
    for case in cases:
        cfg_json = json.loads((case / "config.json").read_text())
        cfg = MuCfg.from_json(cfg_json)
        golden = load_file(str(case / "golden.safetensors"))
        gj = json.loads((case / "golden.json").read_text())
        msgs, good = [], True
        for wfile, key in (("model.safetensors", "logits"), ("model-bf16.safetensors", "logits_bf16w"),
                           ("model-f16.safetensors", "logits_f16w")):
            sd = {k: v.float() for k, v in load_file(str(case / wfile)).items()}
            if cfg_json["model_type"] == "mu":
                model = MuTorch(cfg)
                sd["lm_head.weight"] = sd["transformer.wte.weight"]
            else:
                cfg.n_encoder_layer, cfg.n_decoder_layer = cfg.n_layer, 0
                model = MuDecoderTorch(cfg)
            model.load_state_dict(sd, strict=True)
            model.eval()
            with torch.inference_mode():
                if cfg_json["model_type"] == "mu":
                    logits = model(torch.tensor(gj["encoder_input_ids"]), torch.tensor(gj["decoder_input_ids"]))
                else:
                    logits = model(torch.tensor(gj["logits_input_ids"]))
            d = (logits - golden[key]).abs().max().item() / golden[key].abs().max().item()
            good &= d < 1e-5
            msgs.append(f"{key} rel {d:.1e}")
            if key != "logits":
                continue
            with torch.inference_mode():
                if cfg_json["model_type"] == "mu":
                    enc_out = model.encode(torch.tensor(gj["encoder_input_ids"]))[0]
                    d = (enc_out - golden["encoder_out"]).abs().max().item()
                    good &= d < 1e-4
                    msgs.append(f"encoder_out abs {d:.1e}")
                    for k in ("greedy", "greedy_single"):
                        gg = gj[k]
                        out = model.generate(torch.tensor(gg["input_ids"]), gg["max_new_tokens"],
                                             gg["bos_token_id"], gg["eos_token_id"]).tolist()
                        same = out == gg["output_ids"]
                        good &= same
                        msgs.append(f"{k} {'same' if same else 'DIFFERENT'}")
                else:
                    gg = gj["greedy"]
                    out = model.generate(torch.tensor([gg["prompt_ids"]]), gg["max_new_tokens"])[0].tolist()
                    same = out == gg["output_ids"]
                    good &= same
                    msgs.append(f"greedy {'same' if same else 'DIFFERENT'}")
        ok &= good
        log(f"  fixture {case.name}: {', '.join(msgs)} {'ok' if good else 'FAIL'}")
    return ok


# --------------------------------------------------------------------------------------------------
# Driver


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--input-tokens", type=int, default=512, help="input length (default 512)")
    parser.add_argument("--output-tokens", type=int, default=64, help="generated tokens (default 64)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions after one warm-up (default 3)")
    parser.add_argument("--models", default="mu,mu_decoder", help="comma-separated: mu, mu_decoder")
    parser.add_argument("--preset", default="mu-330m", choices=list(PRESETS), help="model config (default mu-330m)")
    parser.add_argument("--config", type=Path, help="a Mu config.json (MuConfig fields) instead of --preset")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"],
                        help="fp32; bf16 (weights and compute in torch.bfloat16); int8 (quantize_dynamic, per-channel "
                             "qint8 nn.Linear weights, fp32 activations quantized at run time)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT ('-' = stdout only)")
    parser.add_argument("--reference", type=Path, help="reference checkout: verify against it first")
    parser.add_argument("--fixtures", type=Path, help="golden fixture folder (Tests/EncoreTests/Fixtures/mu): "
                        "verify against it first")
    parser.add_argument("--verify-only", action="store_true", help="only run the verification, no timing")
    parser.add_argument("--worker", choices=["mu", "mu_decoder"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads < 1 or args.reps < 1 or args.input_tokens < 1 or args.output_tokens < 1:
        parser.error("--threads, --reps, --input-tokens and --output-tokens must be positive")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in ("mu", "mu_decoder")]
    if bad or not models:
        parser.error(f"--models: unknown model(s) {bad}; choose from mu, mu_decoder")
    if args.worker:
        bench_worker(args)
        return 0
    if args.verify_only and not (args.reference or args.fixtures):
        parser.error("--verify-only needs --reference and/or --fixtures")
    if args.fixtures and not args.fixtures.is_dir():
        parser.error(f"--fixtures: {args.fixtures} is not a folder")

    to_stdout = args.json == "-"
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if to_stdout else (lambda s: print(s, flush=True))

    if args.reference or args.fixtures:
        torch.set_num_threads(args.threads)
        ok = True
        with torch.inference_mode(False):
            if args.reference:
                log("verification against the reference code:")
                ok &= verify_reference(args.reference.resolve(), args.preset, log)
            if args.fixtures:
                log("verification against the golden fixtures:")
                ok &= verify_fixtures(args.fixtures, log)
        if not ok:
            log("mu_torch.py: error: verification failed")
            return 1
        if args.verify_only:
            return 0

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    results = []
    for m in models:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", m, "--threads", str(args.threads),
               "--input-tokens", str(args.input_tokens), "--output-tokens", str(args.output_tokens),
               "--reps", str(args.reps), "--preset", args.preset, "--precision", args.precision] + \
            (["--config", str(args.config)] if args.config else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            log(proc.stderr)
            log(f"mu_torch.py: error: the {m} worker failed (exit {proc.returncode})")
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    report = {"system": "pytorch", "torch_version": torch.__version__, "threads": args.threads,
              "preset": args.preset, "precision": args.precision, "reps": args.reps, "results": results,
              "decode_weights": results[0].get("decode_weights")}
    if not to_stdout:
        print(f"{'model':<11} {'params':>12} {'in':>5} {'out':>4} {'encode ms':>10} {'TTFT ms':>9} "
              f"{'decode tok/s':>13} {'peak RSS MiB':>13}")
        for r in results:
            enc = f"{r['encode_ms']:.1f}" if r.get("encode_ms") is not None else "-"
            tps = f"{r['decode_tokens_per_s']:.2f}" if r["decode_tokens_per_s"] is not None else "-"
            print(f"{r['model']:<11} {r['params']:>12,} {r['input_tokens']:>5} {r['output_tokens']:>4} {enc:>10} "
                  f"{r['ttft_ms']:>9.1f} {tps:>13} {r['peak_rss_mb']:>13.1f}")
    if args.json:
        text = json.dumps(report, indent=2)
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
