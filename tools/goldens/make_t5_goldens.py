#!/usr/bin/env python3
"""Golden fixtures for Encore's T5 tests, computed by transformers' own ``T5ForConditionalGeneration``.

Builds tiny random T5 models with transformers' classes (``T5Config`` -> ``T5ForConditionalGeneration``,
fixed seeds), saves them with ``save_pretrained`` (config.json + model.safetensors, Hugging Face tensor
names), reloads each folder with ``from_pretrained`` (so the goldens describe what transformers makes of
the folder, not of the in-memory model) and writes, per case, into ``OUT/<case>/``:

    config.json, model.safetensors   the model folder as transformers saved it (v1_1: config rewritten in
                                     the style of the released Flan-T5 configs, see below)
    golden.safetensors               F32: encoder_out [B, L, d_model], logits [B, T, V] (a right-padded
                                     batch), long_encoder_out, long_logits (one row longer than
                                     relative_attention_max_distance)
    golden.json                      input ids, greedy continuations (``model.generate``, num_beams=1,
                                     do_sample=False), the relative-position bucket of every distance in
                                     [-300, 300] (encoder: bidirectional, decoder: causal), and for v1_0 a
                                     text prompt tokenized with the unigram-t5 test tokenizer

and ``OUT/README.md`` describing how the files were made.

Cases:
  v1_0       T5 v1.0: ``feed_forward_proj`` "relu" (DenseReluDense.wi / wo), head tied to ``shared`` with
             the d_model^-0.5 scaling of the decoder output. vocab 800 (= the unigram-t5 test tokenizer's,
             so ``encore generate --prompt`` can be checked).
  v1_1       T5 v1.1 / Flan-T5: "gated-gelu" (wi_0, wi_1, wo; GELU tanh), untied ``lm_head.weight``, no
             scaling. config.json is written as the released Flan-T5 configs are (``"tie_word_embeddings":
             false``, no ``scale_decoder_outputs``); num_decoder_layers 3 > num_layers 2.
  v1_1_tied  "gated-gelu" exactly as transformers 5.x saves ``T5Config(tie_word_embeddings=False)``: it ties
             the head anyway and writes ``"tie_word_embeddings": true, "scale_decoder_outputs": false`` (a tied
             head without scaling); 16 buckets, max_distance 24, num_decoder_layers 2 < num_layers 3,
             layer_norm_epsilon 1e-5.
  gguf_gated, gguf_relu  the checkpoints tools/goldens/make_t5_gguf_goldens.py converts to GGUF: d_model, d_ff and
             num_heads·d_kv multiples of 32 (Q8_0/Q4_0 blocks), 32 buckets, max_distance 128; gated-gelu with an
             untied head (Flan-style config) and relu with a tied, scaled head (v1.0). Projections keep transformers'
             own init (weight_scale 1: realistic magnitudes, so quantized files' errors are not amplified ×3 per layer).

Weights: transformers' own initialisation (``torch.manual_seed(seed)`` before construction), then, from
``torch.Generator().manual_seed(seed)``: every projection matrix (q, k, v, o, wi*, wo) multiplied by
WEIGHT_SCALE (the case's ``weight_scale`` when it has one) (with the default init the random nets repeat one token forever), layer-norm weights
1 + N(0, 0.1), relative_attention_bias N(0, 1) (so a wrong bucket moves the logits well past the
tolerance), untied lm_head N(0, 1). Input ids are drawn from the same generator in [2, vocab) and end with
EOS (1), as T5's tokenizer does.

transformers 5.24 cannot run ``generate`` with its cache when num_decoder_layers > num_layers (its
DynamicCache is sized from num_layers: IndexError), so the v1_1 greedy goldens use ``use_cache=False``
(full recomputation at every step); the other cases use the cache. Each batch row is also generated alone
and must give the same tokens.

Usage (from the repository root; /work/venv has torch 2.13 and transformers 5.24):

    /work/venv/bin/python tools/goldens/make_t5_goldens.py
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import T5Config, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "Tests" / "EncoreTests" / "Fixtures" / "t5"
TOKENIZER = REPO_ROOT / "Tests" / "EncoreTokenizersTests" / "Fixtures" / "unigram-t5" / "tokenizer.json"

PAD, EOS = 0, 1
WEIGHT_SCALE = 3.0
MAX_NEW_TOKENS = 24
MIN_GREEDY_MARGIN = 1e-2
BUCKET_RANGE = 300
PROMPT_TEXT = "This License applies to any program or other work which contains a notice."

COMMON = dict(dropout_rate=0.0, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD)

CASES = {
    "v1_0": dict(
        seed=15, batch_lens=(12, 5, 9), long_lens=(150, 40), untied_head=False, flan_config=False, prompt=True,
        config=dict(vocab_size=800, d_model=48, d_kv=16, num_heads=4, d_ff=96, num_layers=2, num_decoder_layers=2,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="relu", tie_word_embeddings=True)),
    "v1_1": dict(
        seed=25, batch_lens=(11, 4, 8), long_lens=(150, 40), untied_head=True, flan_config=True, prompt=False,
        config=dict(vocab_size=200, d_model=40, d_kv=12, num_heads=4, d_ff=80, num_layers=2, num_decoder_layers=3,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
    "v1_1_tied": dict(
        seed=40, batch_lens=(9, 6, 3), long_lens=(60, 40), untied_head=False, flan_config=False, prompt=False,
        config=dict(vocab_size=120, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=3, num_decoder_layers=2,
                    relative_attention_num_buckets=16, relative_attention_max_distance=24, layer_norm_epsilon=1e-5,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
    # For GGUF (tools/goldens/make_t5_gguf_goldens.py converts these two): every matrix row a multiple of 32 values
    # (Q8_0 / Q4_0 blocks), 32 buckets and max_distance 128 (llama.cpp has no key for it and uses 128).
    "gguf_gated": dict(
        seed=53, batch_lens=(10, 4, 7), long_lens=(150, 40), untied_head=True, flan_config=True, prompt=False, weight_scale=1.0,
        config=dict(vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
    "gguf_relu": dict(
        seed=63, batch_lens=(9, 5, 6), long_lens=(150, 40), untied_head=False, flan_config=False, prompt=False, weight_scale=1.0,
        config=dict(vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128,
                    feed_forward_proj="relu", tie_word_embeddings=True)),
}


def fail(msg: str):
    print(f"make_t5_goldens.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def randomize(model, gen, untied_head: bool, weight_scale: float = WEIGHT_SCALE):
    """Scales the projections, perturbs the norms, widens the position biases (see the module docstring)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "relative_attention_bias" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name == "shared.weight":
                pass                                              # transformers' N(0, 1)
            elif name == "lm_head.weight":
                pass                                              # tied: the same tensor as shared
            elif p.ndim == 2:
                p.mul_(weight_scale)
        if untied_head:
            model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=gen))


def random_row(gen, n, vocab):
    return torch.randint(2, vocab, (n - 1,), generator=gen).tolist() + [EOS]


def padded(rows, length=None):
    length = length or max(len(r) for r in rows)
    return [r + [PAD] * (length - len(r)) for r in rows]


def until_eos(ids):
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids


def greedy(model, rows, use_cache):
    """model.generate on the right-padded batch; returns new tokens per row (cut after EOS) and the
    smallest top-1 minus top-2 logit over the steps of unfinished rows."""
    ids = torch.tensor(padded(rows))
    out = model.generate(input_ids=ids, attention_mask=(ids != PAD).long(), max_new_tokens=MAX_NEW_TOKENS,
                         num_beams=1, do_sample=False, use_cache=use_cache, output_logits=True,
                         return_dict_in_generate=True)
    seqs = out.sequences[:, 1:].tolist()                         # drop decoder_start_token_id
    margin = math.inf
    for step, logits in enumerate(out.logits):
        top2 = torch.topk(logits, 2, dim=-1).values
        for b in range(len(rows)):
            if EOS in seqs[b][:step]:
                continue
            margin = min(margin, float(top2[b, 0] - top2[b, 1]))
    return [until_eos(s) for s in seqs], margin


def bucket_table(config, bidirectional):
    rel = torch.arange(-BUCKET_RANGE, BUCKET_RANGE + 1)
    return T5Attention._relative_position_bucket(
        rel, bidirectional=bidirectional, num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance).tolist()


def make_case(name, case, out_dir: Path):
    seed = case["seed"]
    torch.manual_seed(seed)
    config = T5Config(**COMMON, **case["config"])
    model = T5ForConditionalGeneration(config).eval()
    gen = torch.Generator().manual_seed(seed)
    randomize(model, gen, case["untied_head"], case.get("weight_scale", WEIGHT_SCALE))
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}

    folder = out_dir / name
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder)
    (folder / "generation_config.json").unlink(missing_ok=True)   # Encore reads config.json only
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if case["flan_config"]:
        cfg["tie_word_embeddings"] = False                          # as google/flan-t5-* configs
        cfg.pop("scale_decoder_outputs", None)
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    # Everything below comes from the folder as transformers loads it.
    ref = T5ForConditionalGeneration.from_pretrained(folder).eval()
    for k, v in ref.state_dict().items():
        if not torch.equal(v, expected[k]):
            fail(f"{name}: {k} reloaded differently")
    tied = ref.lm_head.weight.data_ptr() == ref.shared.weight.data_ptr()
    if tied == case["untied_head"]:
        fail(f"{name}: lm_head tied={tied}, expected untied={case['untied_head']}")
    scale = bool(ref.config.scale_decoder_outputs)

    V = config.vocab_size
    batch_rows = [random_row(gen, n, V) for n in case["batch_lens"]]
    dec_rows = [[PAD] + torch.randint(2, V, (6,), generator=gen).tolist() for _ in batch_rows]
    dec_rows[-1][4:] = [PAD] * 3                                  # trailing pads: T5 does not mask decoder pads
    enc_len, dec_len = case["long_lens"]
    long_enc = [random_row(gen, enc_len, V)]
    long_dec = [[PAD] + torch.randint(2, V, (dec_len - 1,), generator=gen).tolist()]

    tensors = {}
    with torch.no_grad():
        for prefix, enc_rows, decs in (("", batch_rows, dec_rows), ("long_", long_enc, long_dec)):
            ids = torch.tensor(padded(enc_rows))
            mask = (ids != PAD).long()
            tensors[prefix + "encoder_out"] = ref.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            tensors[prefix + "logits"] = ref(input_ids=ids, attention_mask=mask,
                                             decoder_input_ids=torch.tensor(decs)).logits

        use_cache = config.num_decoder_layers <= config.num_layers
        batch_out, margin = greedy(ref, batch_rows, use_cache)
        for i, row in enumerate(batch_rows):
            alone, m = greedy(ref, [row], use_cache)
            if alone[0] != batch_out[i]:
                fail(f"{name}: transformers gives row {i} different tokens alone and in the batch")
            margin = min(margin, m)
        long_out, m = greedy(ref, long_enc, use_cache)
        margin = min(margin, m)
        if margin < MIN_GREEDY_MARGIN:
            fail(f"{name}: greedy margin {margin:.2e} < {MIN_GREEDY_MARGIN}; pick another seed")

        golden = {
            "seed": seed, "scale_decoder_outputs": scale, "tied_head": tied, "generate_use_cache": use_cache,
            "encoder_input_ids": padded(batch_rows), "decoder_input_ids": dec_rows,
            "long_encoder_input_ids": long_enc, "long_decoder_input_ids": long_dec,
            "greedy": {"input_ids": batch_rows, "output_ids": batch_out, "max_new_tokens": MAX_NEW_TOKENS},
            "greedy_long": {"input_ids": long_enc, "output_ids": long_out, "max_new_tokens": MAX_NEW_TOKENS},
            "min_greedy_margin": margin,
            "buckets": {"range": BUCKET_RANGE, "bidirectional": bucket_table(config, True),
                        "causal": bucket_table(config, False)},
        }
        if case["prompt"]:
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(str(TOKENIZER))
            prompt_ids = tok.encode(PROMPT_TEXT).ids
            out, m = greedy(ref, [prompt_ids], use_cache)
            if m < MIN_GREEDY_MARGIN:
                fail(f"{name}: prompt greedy margin {m:.2e}")
            golden["prompt"] = {"text": PROMPT_TEXT, "input_ids": prompt_ids, "output_ids": out[0],
                                "output_text": tok.decode(out[0], skip_special_tokens=True)}

    save_file({k: v.contiguous().float() for k, v in tensors.items()}, str(folder / "golden.safetensors"),
              metadata={"format": "pt"})
    (folder / "golden.json").write_text(json.dumps(golden) + "\n")
    params = sum(p.numel() for p in ref.parameters())
    return dict(name=name, params=params, margin=margin, scale=scale, tied=tied, use_cache=use_cache,
                greedy=batch_out, config=case["config"], seed=seed)


def write_readme(out_dir: Path, results):
    lines = [
        "# T5 golden fixtures",
        "",
        "Made by `tools/goldens/make_t5_goldens.py` with transformers' own `T5ForConditionalGeneration`",
        "(fp32, CPU): tiny random models saved with `save_pretrained` and reloaded with `from_pretrained`.",
        "Do not edit by hand; rerun the script (deterministic: fixed seeds).",
        "",
        "```sh",
        "/work/venv/bin/python tools/goldens/make_t5_goldens.py",
        "```",
        "",
        f"- python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}",
        "",
        "## Files per case",
        "",
        "- `config.json`, `model.safetensors`: the folder as `save_pretrained` wrote it (v1_1: config",
        "  rewritten as the released Flan-T5 configs: `tie_word_embeddings` false, no `scale_decoder_outputs`).",
        "- `golden.safetensors`: `encoder_out` [B, L, d_model] and `logits` [B, T, V] for the right-padded batch",
        "  `encoder_input_ids` (attention mask = ids != pad) with `decoder_input_ids` (start token 0 = pad; the",
        "  last row ends in pads, which T5 does not mask), `long_encoder_out` / `long_logits` for one row longer",
        "  than `relative_attention_max_distance`.",
        "- `golden.json`: the ids, `greedy` (`model.generate`, num_beams 1, do_sample False, "
        f"{MAX_NEW_TOKENS} new tokens,",
        "  `output_ids` without the start token and cut after EOS; every row generated alone gives the same",
        "  tokens), `greedy_long`, `min_greedy_margin` (smallest top-1 minus top-2 logit over the greedy steps),",
        "  `buckets` (transformers' `_relative_position_bucket` for every distance in [-300, 300]), and for",
        "  v1_0 `prompt` (text tokenized with `Tests/EncoreTokenizersTests/Fixtures/unigram-t5/tokenizer.json`).",
        "",
        "## Cases",
        "",
        "| case | config | params | head | generate cache | min margin | seed |",
        "|---|---|---:|---|---|---:|---:|",
    ]
    for r in results:
        cfg = ", ".join(f"{k} {v}" for k, v in r["config"].items())
        head = ("tied" if r["tied"] else "untied") + (", scaled d_model^-0.5" if r["scale"] else ", unscaled")
        lines.append(f"| `{r['name']}` | {cfg} | {r['params']} | {head} | {r['use_cache']} | {r['margin']:.3f} | {r['seed']} |")
    lines += [
        "",
        "transformers 5.24's `generate` with its cache fails when num_decoder_layers > num_layers (the cache is",
        "sized from num_layers), so v1_1 is generated with `use_cache=False` (full recomputation).",
    ]
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    if not TOKENIZER.is_file():
        fail(f"missing {TOKENIZER}")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    results = [make_case(name, case, args.out) for name, case in CASES.items()]
    write_readme(args.out, results)
    for r in results:
        print(f"{r['name']}: {r['params']} params, min greedy margin {r['margin']:.3f}, greedy {r['greedy']}")


if __name__ == "__main__":
    main()
