#!/usr/bin/env python3
"""T5 GGUF fixtures and llama.cpp's logits for them, for Encore's T5-from-GGUF tests.

Converts the tiny T5 Hugging Face checkpoints that tools/goldens/make_t5_goldens.py made for this purpose
(``Tests/EncoreTests/Fixtures/t5/gguf_gated``: gated-gelu, untied head; ``t5/gguf_relu``: relu, tied head) to
GGUF the way llama.cpp's ``convert_hf_to_gguf.py`` does (``conversion/t5.py`` of llama.cpp at llama-cpp-python
0.3.36), then quantizes with llama.cpp's own quantizer and records llama.cpp's logits:

    OUT/<case>/f32.gguf          every tensor F32 (the converter's ``--outtype f32``)
    OUT/<case>/q8_0.gguf         ``llama_model_quantize`` of f32.gguf, LLAMA_FTYPE_MOSTLY_Q8_0
    OUT/<case>/q4_0.gguf         ``llama_model_quantize`` of f32.gguf, LLAMA_FTYPE_MOSTLY_Q4_0
    OUT/<case>/llama_cpp.safetensors  F32 logits per file: ``<file>.<prompt>`` [steps, V]
    OUT/<case>/llama_cpp.json    the prompts (encoder ids) and decoder ids fed, file types

Why the gguf package writer and not ``convert_hf_to_gguf.py`` itself: the converter's T5 vocabulary step needs a
SentencePiece ``spiece.model`` (it reads the protobuf and scores), and the random test checkpoints have no
tokenizer. This script writes what the converter writes otherwise — the same metadata calls of
``T5Model.set_gguf_parameters`` (context_length 512 as the converter assumes without ``n_positions``,
embedding/feed_forward length, block_count, decoder_block_count, head_count, key/value length,
layer_norm_epsilon, relative_buckets_count, layer_norm_rms_epsilon, decoder_start_token_id, file_type) and tensor
names from gguf-py's own ``TensorNameMap`` for ``MODEL_ARCH.T5`` (shared.weight → token_embd.weight,
lm_head.weight → output.weight, ``encoder.block.N.layer.0.SelfAttention.q`` → ``enc.blk.N.attn_q``, …) — plus
a placeholder ``t5`` (unigram) vocabulary: ``<pad>``, ``</s>``, ``<unk>`` and ``▁tokN`` pieces, which only
matter for text; the logits come from token ids.

llama.cpp runs T5 through its low-level API: ``llama_encode`` on the encoder ids (one batch), then
``llama_decode`` of the decoder ids one token per call (position = step, logits of that token), i.e. the decode
steps Encore's ``beginGeneration`` / ``advance`` run; F32 K/V caches and no flash attention (llama.cpp's defaults,
F16 caches, would add their rounding to the reference). Decoder ids: decoder_start_token_id then fixed tokens.
Prompts: the first (unpadded) row of the case's ``encoder_input_ids`` ("short", 10 tokens), its
``long_encoder_input_ids`` ("long", 150 tokens, past relative_attention_max_distance 128), and "eight": the first 7
tokens of "short" + EOS (8 tokens: Encore runs every product of such a prompt through its decode kernels, which
quantize activations as llama.cpp's quantized matmuls do).

llama.cpp computes T5 without the d_model^-0.5 scaling of the decoder output that transformers applies to tied
(v1.0) heads (the GGUF has no key for it); the relu case records that.

Safetensors reading/writing and the GGUF writer's last steps come from _gguf_common.py. Deterministic: a rerun
gives the committed files bit for bit. Usage (from the repository root; /work/venv-llama has gguf 0.19.0 and
llama-cpp-python 0.3.36):

    /work/venv-llama/bin/python tools/goldens/make_t5_gguf_goldens.py
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import sys
from pathlib import Path

import numpy as np
import gguf
import llama_cpp

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _gguf_common from any working directory
from _gguf_common import finish_gguf, read_safetensors, write_safetensors  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
HF_ROOT = REPO_ROOT / "Tests" / "EncoreTests" / "Fixtures" / "t5"
DEFAULT_OUT = REPO_ROOT / "Tests" / "EncoreTests" / "Fixtures" / "t5_gguf"
CASES = {"gated": ("gguf_gated", ["f32", "q8_0", "q4_0"]), "relu": ("gguf_relu", ["f32", "q8_0", "q4_0"])}
FTYPES = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}
DECODER_STEPS = [11, 23, 7, 42, 5, 17, 3, 60]        # fed after decoder_start_token_id


def fail(msg: str):
    print(f"make_t5_gguf_goldens.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def convert(hf: Path, out: Path):
    """config.json + model.safetensors → GGUF F32, as convert_hf_to_gguf.py's T5Model (see the docstring)."""
    cfg = json.loads((hf / "config.json").read_text())
    try:
        tensors = read_safetensors(hf / "model.safetensors")
    except ValueError as e:                                          # a tensor that is not F32
        fail(str(e))
    n_layer = cfg["num_layers"]
    n_dec = cfg.get("num_decoder_layers", n_layer)
    w = gguf.GGUFWriter(str(out), "t5")
    w.add_name(hf.name)
    w.add_context_length(cfg.get("n_positions", 512))
    w.add_embedding_length(cfg["d_model"])
    w.add_feed_forward_length(cfg["d_ff"])
    w.add_block_count(n_layer)
    w.add_decoder_block_count(n_dec)
    w.add_head_count(cfg["num_heads"])
    w.add_key_length(cfg["d_kv"])
    w.add_value_length(cfg["d_kv"])
    w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    w.add_relative_attn_buckets_count(cfg["relative_attention_num_buckets"])
    w.add_layer_norm_rms_eps(cfg["layer_norm_epsilon"])
    w.add_decoder_start_token_id(cfg["decoder_start_token_id"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    # placeholder unigram vocabulary (see the docstring)
    V = cfg["vocab_size"]
    pad, eos, unk = cfg["pad_token_id"], cfg["eos_token_id"], 2
    tokens = [f"\u2581tok{i}".encode() for i in range(V)]
    types = [gguf.TokenType.NORMAL] * V
    for i, (piece, t) in {pad: (b"<pad>", gguf.TokenType.CONTROL), eos: (b"</s>", gguf.TokenType.CONTROL),
                          unk: (b"<unk>", gguf.TokenType.UNKNOWN)}.items():
        tokens[i], types[i] = piece, t
    w.add_tokenizer_model("t5")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(V)])
    w.add_token_types(types)
    w.add_add_space_prefix(True)
    w.add_remove_extra_whitespaces(True)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    w.add_pad_token_id(pad)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5, max(n_layer, n_dec))
    seen_shared = False
    for name, t in tensors.items():
        if name in ("decoder.embed_tokens.weight", "encoder.embed_tokens.weight", "shared.weight"):
            if seen_shared:
                continue
            name, seen_shared = "shared.weight", True
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            fail(f"{hf}: no GGUF name for {name}")
        w.add_tensor(new, t)
    finish_gguf(w)


def quantize(src: Path, dst: Path, ftype: int):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        fail(f"llama_model_quantize({src} → {dst}) returned {rc}")


def tensor_types(path: Path) -> dict[str, str]:
    r = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in r.tensors}


def llama_logits(path: Path, encoder_ids: list[int], decoder_ids: list[int]) -> np.ndarray:
    """llama_encode(encoder_ids), then one llama_decode per decoder id; the logits after each: [steps, V]."""
    mp = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mp)
    if not model:
        fail(f"llama.cpp could not load {path}")
    if not llama_cpp.llama_model_has_encoder(model):
        fail(f"{path}: llama.cpp sees no encoder")
    start = llama_cpp.llama_model_decoder_start_token(model)
    if start != decoder_ids[0]:
        fail(f"{path}: llama.cpp's decoder start token is {start}, expected {decoder_ids[0]}")
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx = 512
    cp.n_batch = 512
    cp.n_ubatch = 512
    cp.n_threads = 1
    cp.n_threads_batch = 1
    cp.type_k = cp.type_v = 0                                       # GGML_TYPE_F32 caches (default F16)
    cp.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = llama_cpp.llama_init_from_model(model, cp)
    vocab = llama_cpp.llama_model_get_vocab(model)
    V = llama_cpp.llama_vocab_n_tokens(vocab)

    def batch_of(ids, pos0, logits_last):
        b = llama_cpp.llama_batch_init(len(ids), 0, 1)
        b.n_tokens = len(ids)
        for i, t in enumerate(ids):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = logits_last and i == len(ids) - 1
        return b

    b = batch_of(encoder_ids, 0, False)
    if llama_cpp.llama_encode(ctx, b) != 0:
        fail(f"{path}: llama_encode failed")
    llama_cpp.llama_batch_free(b)
    rows = []
    for step, t in enumerate(decoder_ids):
        b = batch_of([t], step, True)
        if llama_cpp.llama_decode(ctx, b) != 0:
            fail(f"{path}: llama_decode failed at step {step}")
        llama_cpp.llama_batch_free(b)
        p = llama_cpp.llama_get_logits_ith(ctx, -1)
        rows.append(np.ctypeslib.as_array(p, shape=(V,)).copy())
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return np.stack(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    llama_cpp.llama_backend_init()
    quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(quiet, None)
    summary = {}
    for case, (hf_name, files) in CASES.items():
        hf = HF_ROOT / hf_name
        golden = json.loads((hf / "golden.json").read_text())
        cfg = json.loads((hf / "config.json").read_text())
        out = args.out / case
        out.mkdir(parents=True, exist_ok=True)
        convert(hf, out / "f32.gguf")
        for f in files:
            if f != "f32":
                quantize(out / "f32.gguf", out / f"{f}.gguf", FTYPES[f])
        first = [t for t in golden["encoder_input_ids"][0] if t != cfg["pad_token_id"]]
        prompts = {"short": first, "long": golden["long_encoder_input_ids"][0], "eight": first[:7] + [cfg["eos_token_id"]]}
        decoder_ids = [cfg["decoder_start_token_id"]] + DECODER_STEPS
        logits = {}
        for f in files:
            for p, ids in prompts.items():
                logits[f"{f}.{p}"] = llama_logits(out / f"{f}.gguf", ids, decoder_ids)
        write_safetensors(out / "llama_cpp.safetensors", dict(sorted(logits.items())))    # names in sorted order
        info = {"hf_checkpoint": f"t5/{hf_name}", "prompts": prompts, "decoder_ids": decoder_ids,
                "files": {f: tensor_types(out / f"{f}.gguf") for f in files},
                "llama_cpp_python": llama_cpp.__version__, "python": platform.python_version()}
        (out / "llama_cpp.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        summary[case] = {f: (out / f"{f}.gguf").stat().st_size for f in files}
        for f in files:
            if f != "f32":
                err = np.abs(logits[f"{f}.short"] - logits["f32.short"]).max() / np.abs(logits["f32.short"]).max()
                print(f"{case} {f}: llama.cpp relative logit change vs its f32 {err:.3e}")
    lines = ["# T5 GGUF fixtures", "",
             "Made by `tools/goldens/make_t5_gguf_goldens.py` (see its docstring) from the transformers checkpoints",
             "`../t5/gguf_gated` and `../t5/gguf_relu`; do not edit by hand.", "", "```sh",
             "/work/venv-llama/bin/python tools/goldens/make_t5_gguf_goldens.py", "```", "",
             f"- python {platform.python_version()}, gguf (package) + llama-cpp-python {llama_cpp.__version__}", "",
             "| file | bytes |", "|---|---:|"]
    lines += [f"| `{c}/{f}.gguf` | {n} |" for c, files in summary.items() for f, n in files.items()]
    lines += ["", "`<case>/llama_cpp.safetensors`: llama.cpp's logits `<file>.<prompt>` [9 decode steps, vocab];",
              "`<case>/llama_cpp.json`: prompts, decoder ids and every tensor's ggml type per file."]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
