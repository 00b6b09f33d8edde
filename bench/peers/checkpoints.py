#!/usr/bin/env python3
"""Identical random checkpoints for the side-by-side peers (written once, reused; never committed).

Writes under --out (default /tmp/encore-peers; delete it to regenerate):

    llama-hf/            Hugging Face LlamaForCausalLM folder (transformers ``save_pretrained``, random weights,
                         a word-level tokenizer.json of the vocabulary size so CTranslate2 can convert it).
                         Shape of SmolLM2-360M: 32 layers, width 960, 15 heads x 64, 5 KV heads, SwiGLU 2560,
                         vocabulary 49,152, tied head: 361.8M parameters.
    llama-ct2/           the same weights converted by CTranslate2's TransformersConverter (float32)
    llama-ct2-int8/      ... converted with quantization int8
    llama-f32.gguf       the same weights as a llama GGUF (llama.cpp's Q/K row permutation), written with the
                         ``gguf`` package; F32 tensors
    llama-bf16.gguf, llama-q8_0.gguf, llama-q4_0.gguf, llama-q4_k_m.gguf
                         requantized from llama-f32.gguf by llama.cpp's own ``llama_model_quantize``
    t5-hf/               T5ForConditionalGeneration, the 347M config of BASELINES.md: 20 + 10 layers, d_model
                         1024, 6 heads x 64, d_ff 4096 (ReLU), vocabulary 32,128, tied head
    t5-ct2/, t5-ct2-int8/  CTranslate2 conversions of t5-hf
    t5-f32.gguf          t5-hf as a T5 GGUF (names and metadata as llama.cpp's convert_hf_to_gguf.py writes them)
    t5-bf16.gguf, t5-q8_0.gguf, t5-q4_0.gguf, t5-q4_k_m.gguf   requantized by llama.cpp

--small writes tiny versions of the same shapes (for a smoke test of the driver). A file ``DONE.json`` per
model records the config; an existing complete set is kept.

Usage:

    /work/venv/bin/python bench/peers/checkpoints.py --out /tmp/encore-peers \\
        --llama-python /work/venv-llama/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

LLAMA = dict(vocab_size=49152, hidden_size=960, num_hidden_layers=32, num_attention_heads=15,
             num_key_value_heads=5, intermediate_size=2560, max_position_embeddings=2048, rope_theta=10000.0,
             rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
             hidden_act="silu")
T5 = dict(vocab_size=32128, d_model=1024, d_kv=64, d_ff=4096, num_layers=20, num_decoder_layers=10, num_heads=6,
          feed_forward_proj="relu", tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
          decoder_start_token_id=0, relative_attention_num_buckets=32, relative_attention_max_distance=128)
SMALL_LLAMA = dict(LLAMA, vocab_size=1024, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, intermediate_size=256)
SMALL_T5 = dict(T5, vocab_size=1024, d_model=128, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=2)
GGUF_TYPES = ("bf16", "q8_0", "q4_0", "q4_k_m")


def log(s):
    print(f"[checkpoints] {s}", file=sys.stderr, flush=True)


def word_tokenizer(folder: Path, vocab_size: int, specials: dict[str, int]):
    """A word-level tokenizer.json whose vocabulary has exactly vocab_size entries (ids are what matters)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {f"w{i}": i for i in range(vocab_size)}
    for tok, i in specials.items():
        del vocab[f"w{i}"]
        vocab[tok] = i
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, **{k: v for k, v in {
        "unk_token": "<unk>", "bos_token": "<s>" if "<s>" in specials else None, "eos_token": "</s>",
        "pad_token": "<pad>" if "<pad>" in specials else None}.items() if v})
    fast.save_pretrained(folder)


def make_llama_hf(folder: Path, cfg: dict):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    model.eval()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    # Encore and older readers look for rope_theta at the top level; transformers 5 nests it in rope_parameters.
    c = json.loads((tmp / "config.json").read_text())
    c.setdefault("rope_theta", cfg["rope_theta"])
    (tmp / "config.json").write_text(json.dumps(c, indent=2) + "\n")
    word_tokenizer(tmp, cfg["vocab_size"], {"<unk>": 0, "<s>": 1, "</s>": 2})
    params = sum(p.numel() for p in model.parameters())
    (tmp / "DONE.json").write_text(json.dumps({"config": cfg, "params": params}) + "\n")
    os.replace(tmp, folder)
    log(f"{folder}: {params / 1e6:.1f}M parameters")


def make_t5_hf(folder: Path, cfg: dict):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**cfg))
    model.eval()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    word_tokenizer(tmp, cfg["vocab_size"], {"<pad>": 0, "</s>": 1, "<unk>": 2})
    params = sum(p.numel() for p in model.parameters())
    (tmp / "DONE.json").write_text(json.dumps({"config": cfg, "params": params}) + "\n")
    os.replace(tmp, folder)
    log(f"{folder}: {params / 1e6:.1f}M parameters")


def make_ct2(src: Path, dst: Path, quantization: str | None):
    import ctranslate2
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ctranslate2.converters.TransformersConverter(str(src)).convert(str(tmp), quantization=quantization, force=True)
    os.replace(tmp, dst)
    log(f"{dst}: converted ({quantization or 'float32'})")


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: HF rotate-half rows -> llama.cpp's adjacent-pair RoPE rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_llama_gguf(src: Path, dst: Path, cfg: dict):
    import gguf
    import numpy as np
    from safetensors.numpy import load_file
    W = load_file(str(src / "model.safetensors"))
    H, KV, C = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    V = cfg["vocab_size"]
    tmp = str(dst) + ".tmp"
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name("encore-peers-random-llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(C)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_rope_dimension_count(C // H)
    w.add_file_type(0)
    # SentencePiece-style vocabulary of the right size: <unk> <s> </s>, 256 byte tokens, filler pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581t{i}" for i in range(V - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * V)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (V - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def put(name, a):
        w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))

    put("token_embd.weight", W["model.embed_tokens.weight"])
    for i in range(cfg["num_hidden_layers"]):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        put(p + "attn_norm.weight", W[q + "input_layernorm.weight"])
        put(p + "attn_q.weight", permute(W[q + "self_attn.q_proj.weight"], H))
        put(p + "attn_k.weight", permute(W[q + "self_attn.k_proj.weight"], KV))
        put(p + "attn_v.weight", W[q + "self_attn.v_proj.weight"])
        put(p + "attn_output.weight", W[q + "self_attn.o_proj.weight"])
        put(p + "ffn_norm.weight", W[q + "post_attention_layernorm.weight"])
        put(p + "ffn_gate.weight", W[q + "mlp.gate_proj.weight"])
        put(p + "ffn_up.weight", W[q + "mlp.up_proj.weight"])
        put(p + "ffn_down.weight", W[q + "mlp.down_proj.weight"])
    put("output_norm.weight", W["model.norm.weight"])
    if "lm_head.weight" in W and not cfg["tie_word_embeddings"]:
        put("output.weight", W["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, dst)
    log(f"{dst}: written")


def make_t5_gguf(src: Path, dst: Path, cfg: dict):
    """The T5 folder as a GGUF the way llama.cpp's convert_hf_to_gguf.py (T5Model) writes it (F32 tensors)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file
    W = load_file(str(src / "model.safetensors"))
    V = cfg["vocab_size"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5, max(cfg["num_layers"], cfg["num_decoder_layers"]))
    tmp = str(dst) + ".tmp"
    w = gguf.GGUFWriter(tmp, "t5")
    w.add_name("encore-peers-random-t5")
    w.add_context_length(2048)
    w.add_embedding_length(cfg["d_model"])
    w.add_feed_forward_length(cfg["d_ff"])
    w.add_block_count(cfg["num_layers"])
    w.add_decoder_block_count(cfg["num_decoder_layers"])
    w.add_head_count(cfg["num_heads"])
    w.add_key_length(cfg["d_kv"])
    w.add_value_length(cfg["d_kv"])
    w.add_layer_norm_eps(1e-6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_relative_attn_buckets_count(cfg["relative_attention_num_buckets"])
    w.add_decoder_start_token_id(cfg["decoder_start_token_id"])
    w.add_file_type(0)
    tokens = ["<pad>", "</s>", "<unk>"] + [f"\u2581t{i}" for i in range(V - 3)]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * V)
    w.add_token_types([3, 3, 2] + [1] * (V - 3))
    w.add_pad_token_id(0)
    w.add_eos_token_id(1)
    w.add_unk_token_id(2)
    done = set()
    for hf, a in W.items():
        if hf in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            hf = "shared.weight"
        if hf in done:
            continue
        done.add(hf)
        name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise SystemExit(f"no GGUF name for {hf}")
        w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, dst)
    log(f"{dst}: written")


def quantize_ggufs(args, f32: Path, prefix: str):
    for t in GGUF_TYPES:
        dst = args.out / f"{prefix}-{t}.gguf"
        if not dst.is_file():
            subprocess.run([args.llama_python, str(HERE / "llamacpp_peer.py"), "--quantize", str(f32), str(dst), t],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            log(f"{dst}: quantized by llama.cpp")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", type=Path, default=Path("/tmp/encore-peers"))
    ap.add_argument("--models", default="llama,t5", help="comma separated: llama, t5")
    ap.add_argument("--small", action="store_true", help="tiny shapes (smoke test of the driver)")
    ap.add_argument("--llama-python", default="/work/venv-llama/bin/python",
                    help="Python with llama-cpp-python, for llama.cpp's quantizer (GGUF bf16/q8_0/q4_0)")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if "llama" in models:
        cfg = SMALL_LLAMA if args.small else LLAMA
        hf = out / "llama-hf"
        if not (hf / "DONE.json").is_file():
            make_llama_hf(hf, cfg)
        for q, d in ((None, "llama-ct2"), ("int8", "llama-ct2-int8")):
            if not (out / d / "model.bin").is_file():
                make_ct2(hf, out / d, q)
        f32 = out / "llama-f32.gguf"
        if not f32.is_file():
            make_llama_gguf(hf, f32, cfg)
        quantize_ggufs(args, f32, "llama")
    if "t5" in models:
        cfg = SMALL_T5 if args.small else T5
        hf = out / "t5-hf"
        if not (hf / "DONE.json").is_file():
            make_t5_hf(hf, cfg)
        for q, d in ((None, "t5-ct2"), ("int8", "t5-ct2-int8")):
            if not (out / d / "model.bin").is_file():
                make_ct2(hf, out / d, q)
        f32 = out / "t5-f32.gguf"
        if not f32.is_file():
            make_t5_gguf(hf, f32, cfg)
        quantize_ggufs(args, f32, "t5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
