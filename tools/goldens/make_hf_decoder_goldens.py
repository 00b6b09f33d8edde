#!/usr/bin/env python3
"""Goldens from Hugging Face transformers for Encore's decoder-only families (Llama, Qwen2, Phi-3).

Builds tiny random models with transformers' own classes (fixed seeds), saves each with `save_pretrained`
(config.json + model.safetensors, exactly what a user's Hugging Face folder holds) under
Tests/EncoreTests/Fixtures/hf_decoders/<name>/ and records transformers' outputs beside it:

  <name>/golden.json          prompts, greedy continuations (model.generate, do_sample=False, KV cache)
  <name>/golden.safetensors   logits [T, V] of every prompt position (one forward, no cache)

Models (all: 2 layers, vocabulary 128, GQA 4 query / 2 KV heads, SwiGLU, RMSNorm):
  llama            plain RoPE, untied head
  llama_headdim    head_dim 16 with hidden 32 (query width 64 != hidden), tied head, attention + MLP biases
  llama_linear     rope_type linear, factor 2
  llama_dynamic    rope_type dynamic (NTK), factor 2, max_position_embeddings 24 (prompts cross it)
  llama3           rope_type llama3 (factor 4, low 1, high 4, original 16)
  qwen2            q/k/v biases, tied head
  phi3             fused qkv_proj / gate_up_proj, rope_type longrope (short/long factors, original 16)

The `llama` folder also gets a tiny ChatML tokenizer (tokenizer.json: byte-level BPE over 120 base symbols + the
special tokens <|im_start|>, <|im_end|>, <|endoftext|>; tokenizer_config.json with a ChatML chat_template) so that
`encore chat` can be tested offline.

Weights are re-drawn with a larger spread than transformers' init (N(0, 0.15) matrices, norms 1 ± 0.2,
biases N(0, 0.1)) so logits are far from ties and greedy continuations are a real check.

Run (from the repository root; torch 2.13 CPU + transformers 5.24 from PyPI):
    /work/venv/bin/python tools/goldens/make_hf_decoder_goldens.py
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "../.."))
OUT = os.path.join(ROOT, "Tests/EncoreTests/Fixtures/hf_decoders")

COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=1,
              eos_token_id=2, pad_token_id=0)


def models():
    yield "llama", LlamaForCausalLM, LlamaConfig(**COMMON, tie_word_embeddings=False)
    yield "llama_headdim", LlamaForCausalLM, LlamaConfig(**COMMON, head_dim=16, tie_word_embeddings=True,
                                                         attention_bias=True, mlp_bias=True)
    yield "llama_linear", LlamaForCausalLM, LlamaConfig(
        **COMMON, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    c = dict(COMMON, max_position_embeddings=24)
    yield "llama_dynamic", LlamaForCausalLM, LlamaConfig(
        **c, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    yield "llama3", LlamaForCausalLM, LlamaConfig(
        **COMMON, rope_parameters={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                   "rope_theta": 500000.0})
    yield "qwen2", Qwen2ForCausalLM, Qwen2Config(**COMMON, tie_word_embeddings=True, rope_theta=1000000.0)
    g = torch.Generator().manual_seed(7)
    half = 4  # head_dim 8 → 4 frequencies
    short = (1 + torch.rand(half, generator=g)).tolist()
    long = (1 + 8 * torch.rand(half, generator=g)).tolist()
    yield "phi3", Phi3ForCausalLM, Phi3Config(
        **COMMON, original_max_position_embeddings=16,
        rope_parameters={"rope_type": "longrope", "short_factor": short, "long_factor": long,
                         "original_max_position_embeddings": 16, "rope_theta": 10000.0})


def redraw(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(1 + (torch.rand(p.shape, generator=g) - 0.5) * 0.4)


def write_chat_tokenizer(folder):
    """A 128-token ChatML tokenizer for the tiny llama (ids 0..127, specials 0, 1, 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    # printable ASCII, then byte-level symbols of control bytes (Ā = 0x00, …, Ġ = space, Ċ = newline) to fill 128
    alphabet = [chr(c) for c in range(33, 127)] + ["\u010a", "\u0120"] + [chr(0x100 + i) for i in range(40)]
    alphabet = list(dict.fromkeys(alphabet))
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in alphabet:
        if len(vocab) < 128:
            vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    tok.save(os.path.join(folder, "tokenizer.json"))
    template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "chat_template": template}, f, indent=1)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    for seed, (name, cls, config) in enumerate(models()):
        torch.manual_seed(seed)
        model = cls(config).eval()
        redraw(model, 100 + seed)
        d = os.path.join(OUT, name)
        model.save_pretrained(d, safe_serialization=True)
        g = torch.Generator().manual_seed(200 + seed)
        prompts = [torch.randint(3, 128, (n,), generator=g).tolist() for n in (7, 40)]
        gen_prompt = torch.randint(3, 128, (10,), generator=g).tolist()
        tensors, record = {}, {"model": name, "prompts": prompts, "generation": {}}
        for i, p in enumerate(prompts):
            fresh = cls.from_pretrained(d).eval()     # dynamic RoPE keeps state between calls: start fresh
            with torch.no_grad():
                tensors[f"prompt{i}.logits"] = fresh(torch.tensor([p])).logits[0].float().contiguous()
        fresh = cls.from_pretrained(d).eval()
        with torch.no_grad():
            out = fresh.generate(torch.tensor([gen_prompt]), attention_mask=torch.ones(1, 10, dtype=torch.long),
                                 max_new_tokens=30, do_sample=False, num_beams=1, eos_token_id=None,
                                 pad_token_id=0)
        record["generation"] = {"prompt": gen_prompt, "tokens": out[0, 10:].tolist()}
        if name == "llama":       # a left-padded batch of two prompts
            a, b = gen_prompt[:6], gen_prompt
            ids = torch.tensor([[0] * 4 + a, b])
            mask = torch.tensor([[0] * 4 + [1] * 6, [1] * 10])
            with torch.no_grad():
                out = fresh.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1,
                                     eos_token_id=None, pad_token_id=0)
            record["batch_generation"] = {"prompts": [a, b], "tokens": out[:, 10:].tolist()}
        if name == "llama":
            write_chat_tokenizer(d)
        save_file(tensors, os.path.join(d, "golden.safetensors"))
        with open(os.path.join(d, "golden.json"), "w") as f:
            json.dump(record, f, indent=1)
        print(name, {k: list(v.shape) for k, v in tensors.items()}, record["generation"]["tokens"][:8])


if __name__ == "__main__":
    main()
