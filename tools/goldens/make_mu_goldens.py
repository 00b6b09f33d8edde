#!/usr/bin/env python3
"""Golden fixtures for Encore's Mu tests, computed by the reference PyTorch code.

Builds the reference model classes (``Mu``, ``MuConfig``, ``MuEncoderBlock`` from a checkout of
microsoft/encoder-decoder-slm, i.e. the reference's own math) at small random fp32 configs and writes,
per case, into ``OUT/<case>/``:

    config.json              Encore's config: the reference MuConfig field names (+ model_type, bos/eos ids)
    model.safetensors        the state dict in F32, reference tensor names, without the tied lm_head.weight
    model-bf16.safetensors   the same tensors stored as BF16
    model-f16.safetensors    the same tensors stored as F16
    golden.safetensors       F32: encoder_out (Mu cases), logits, logits_bf16w, logits_f16w
    golden.json              input ids and greedy continuations (reference ``Mu.generate`` with top_k=1)

and ``OUT/README.md`` describing how the files were made.

Cases: ``gqa_mod`` (GQA, h mod n_kv mapping, rope_factor 1), ``gqa_interleaved_ntk`` (GQA, h // groups
mapping, NTK rope_factor 2 with inputs longer than block_size), ``mha`` (n_kv_head = n_head, qkv_embd =
n_embd) and ``mu_decoder`` (the matched decoder-only baseline, built from the reference's own
``MuEncoderBlock`` made causal). Weights are random but seeded, so a rerun reproduces the same files.

Usage (from the repository root):

    /work/venv/bin/python tools/goldens/make_mu_goldens.py --reference /work/mu-ref \\
        --reference-git-dir /work/.mirror/microsoft+encoder-decoder-slm/repo

The reference checkout is the ``src`` folder of microsoft/encoder-decoder-slm; ``<reference>/src`` is put on
``sys.path`` and ``mu.models.modeling_mu`` / ``mu.models.mu_utils`` are imported from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "Tests" / "EncoreTests" / "Fixtures" / "mu"

PAD, BOS, EOS = 0, 1, 2
MAX_NEW_TOKENS = 20
# A greedy step whose top-1/top-2 logit gap is below this would be a coin toss for another fp32
# implementation; such seeds are rejected.
MIN_GREEDY_MARGIN = 1e-2
MAX_SEED_ATTEMPTS = 50
LINEAR_STD = 0.4

MU_FIELDS = [
    "n_encoder_layer", "n_decoder_layer", "n_embd", "qkv_embd", "is_interleaved", "hidden_dim",
    "n_head", "n_kv_head", "block_size", "dropout", "rope_theta", "rope_factor", "pad_token_id",
    "vocab_size",
]

_BASE = dict(n_encoder_layer=3, n_decoder_layer=2, n_embd=48, qkv_embd=32, is_interleaved=False,
             hidden_dim=96, n_head=4, n_kv_head=2, block_size=16, dropout=0.1, rope_theta=10000,
             rope_factor=1.0, pad_token_id=PAD, vocab_size=101)

# Seeds: the first acceptable seed at or after each start (see continuation_ok). gqa_mod and
# gqa_interleaved_ntk start at seeds where a batch row reaches EOS mid-way (row 1 at step 16 for gqa_mod,
# so the other row continues while it is padded with EOS; row 0 at step 10 for the NTK case, so
# greedy_single stops early), found by scanning seeds.
CASES = {
    "gqa_mod": dict(kind="mu", seed=1028, enc_lens=(12, 7), config=dict(_BASE)),
    "gqa_interleaved_ntk": dict(
        kind="mu", seed=2100, enc_lens=(13, 7),
        config=dict(_BASE, is_interleaved=True, rope_factor=2.0, block_size=8, n_embd=40, qkv_embd=32,
                    hidden_dim=80, rope_theta=500)),
    "mha": dict(
        kind="mu", seed=3005, enc_lens=(12, 7),
        config=dict(_BASE, n_encoder_layer=2, n_decoder_layer=1, n_embd=32, qkv_embd=None, hidden_dim=64,
                    n_head=2, n_kv_head=2)),
    "mu_decoder": dict(kind="mu_decoder", seed=4002, n_layer=4, logits_lens=(10, 6), prompt_len=8,
                       config=dict(_BASE)),
}


def fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"make_mu_goldens.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def import_reference(ref: Path):
    src = ref / "src"
    if not (src / "mu" / "models" / "modeling_mu.py").is_file():
        fail(f"{ref} is not a checkout of microsoft/encoder-decoder-slm "
             f"(missing {src / 'mu' / 'models' / 'modeling_mu.py'})")
    sys.path.insert(0, str(src))
    try:
        import mu.models.modeling_mu as modeling_mu
        import mu.models.mu_utils as mu_utils
    except ImportError as e:
        fail(f"cannot import the reference model from {src}: {e} "
             "(it needs torch and transformers in this Python)")
    return modeling_mu, mu_utils


# --------------------------------------------------------------------------------------------------
# Models


def build_decoder_only(torch, mu_utils, cfg, n_layer):
    """The matched decoder-only baseline made of the reference's own blocks.

    wte -> n_layer x MuEncoderBlock with attn.is_causal = True (positions 0..T-1, causal + key-padding
    mask) -> ln_f -> tied head (logits = ln_f(x) @ wte.weight.T).
    """
    nn = torch.nn

    class RefMuDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = cfg
            self.transformer = nn.ModuleDict({
                "wte": nn.Embedding(cfg.vocab_size, cfg.n_embd),
                "h": nn.ModuleList([mu_utils.MuEncoderBlock(cfg, "cpu") for _ in range(n_layer)]),
                "ln_f": mu_utils.MuRMSNorm(cfg.n_embd, device="cpu"),
            })
            for block in self.transformer.h:
                block.attn.is_causal = True

        def forward(self, ids):
            mask = ids != cfg.pad_token_id                     # (B, T) key-padding mask
            x = self.transformer.wte(ids)                      # (B, T, C)
            for block in self.transformer.h:
                x = block(x, encoder_mask=mask)
            x = self.transformer.ln_f(x)
            return x @ self.transformer.wte.weight.T           # (B, T, V)

    return RefMuDecoder()


def randomize(torch, mu_utils, model, gen):
    """Non-trivial weights: Linear N(0, LINEAR_STD), biases N(0, 0.1), RMSNorm 1 + N(0, 0.1), embeddings N(0, 1).

    With the tied head, a random net tends to predict its current input token again (the residual stream is
    dominated by that token's embedding); LINEAR_STD = 0.4 makes the blocks' contribution large enough for
    greedy continuations that are not constant. Walks ``model.transformer`` only, so the tied ``lm_head`` (same Parameter as wte) is not touched twice.
    """
    nn = torch.nn
    with torch.no_grad():
        for module in model.transformer.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, LINEAR_STD, generator=gen)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(module, mu_utils.MuRMSNorm):
                module.weight.normal_(0.0, 0.1, generator=gen).add_(1.0)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 1.0, generator=gen)


def exported_state_dict(model):
    """fp32 state dict with reference names, without the tied lm_head.weight, contiguous clones."""
    sd = model.state_dict()
    if "lm_head.weight" in sd:
        assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr(), "lm_head not tied"
        del sd["lm_head.weight"]
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def with_rounded_weights(torch, model, sd, dtype):
    """A deep copy of model whose weights were rounded to dtype and back to fp32."""
    import copy
    m = copy.deepcopy(model)
    rounded = {k: v.to(dtype).to(torch.float32) for k, v in sd.items()}
    if hasattr(m, "lm_head"):
        rounded["lm_head.weight"] = rounded["transformer.wte.weight"]
    m.load_state_dict(rounded, strict=True)
    m.eval()
    return m


# --------------------------------------------------------------------------------------------------
# Inputs and greedy checks


def random_ids(torch, gen, n, vocab):
    return torch.randint(3, vocab, (n,), generator=gen).tolist()


def padded(rows, length):
    return [r + [PAD] * (length - len(r)) for r in rows]


def margins_mu(torch, model, enc_ids, out_ids):
    """Top-1 minus top-2 logit at each greedy step of each row (full recomputation), until its EOS."""
    enc = torch.tensor(enc_ids)
    out = torch.tensor(out_ids)
    enc_out, enc_mask = model.encode(enc)
    result = []
    for t in range(1, out.shape[1]):
        logits = model.decode(out[:, :t], enc_out, enc_mask)[:, -1, :]
        top2 = torch.topk(logits, 2, dim=-1)
        for b in range(out.shape[0]):
            if EOS in out[b, 1:t].tolist():
                continue  # row already finished; later tokens are EOS padding
            assert top2.indices[b, 0].item() == out[b, t].item(), "greedy re-check disagrees with generate"
            result.append((top2.values[b, 0] - top2.values[b, 1]).item())
    return result


def continuation_ok(new_tokens):
    """Meaningful continuation: not EOS at step 1, not a constant or 2-cycle, at least 4 distinct tokens."""
    if not new_tokens or new_tokens[0] == EOS:
        return False, "EOS at step 1"
    before_eos = new_tokens[: new_tokens.index(EOS)] if EOS in new_tokens else new_tokens
    if len(before_eos) < 8:
        return False, f"EOS after only {len(before_eos)} tokens"
    if len(set(before_eos)) < 4:
        return False, f"only {len(set(before_eos))} distinct tokens: {before_eos}"
    return True, ""


# --------------------------------------------------------------------------------------------------
# Cases


def make_mu_case(torch, modeling_mu, mu_utils, spec, seed):
    cfg = modeling_mu.MuConfig(**spec["config"])
    model = modeling_mu.Mu(cfg, device="cpu")  # note: Mu.__init__ calls torch.manual_seed(42)
    gen = torch.Generator().manual_seed(seed)
    randomize(torch, mu_utils, model, gen)
    model.eval()

    V = cfg.vocab_size
    n0, n1 = spec["enc_lens"]
    enc_rows = [random_ids(torch, gen, n0, V), random_ids(torch, gen, n1, V)]
    L = max(n0, n1)
    enc_ids = padded(enc_rows, L)
    t = random_ids(torch, gen, 5, V)
    u = random_ids(torch, gen, 2, V)
    dec_ids = [[BOS] + t, [BOS] + u + [PAD] * 3]

    sd = exported_state_dict(model)
    with torch.no_grad():
        enc = torch.tensor(enc_ids)
        dec = torch.tensor(dec_ids)
        encoder_out, _ = model.encode(enc)
        logits = model(enc, dec).logits
        logits_bf16w = with_rounded_weights(torch, model, sd, torch.bfloat16)(enc, dec).logits
        logits_f16w = with_rounded_weights(torch, model, sd, torch.float16)(enc, dec).logits

        def greedy(ids):
            out = model.generate(torch.tensor(ids), bos_token_id=BOS, eos_token_id=EOS,
                                 max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, top_k=1)
            return out.tolist()

        out_batch = greedy(enc_ids)
        out_single = greedy([enc_rows[0]])
        margins = margins_mu(torch, model, enc_ids, out_batch) + margins_mu(torch, model, [enc_rows[0]], out_single)

    problems = []
    for name, rows in (("greedy", out_batch), ("greedy_single", out_single)):
        for b, row in enumerate(rows):
            ok, why = continuation_ok(row[1:])
            if not ok:
                problems.append(f"{name}[{b}]: {why}")
    if min(margins) < MIN_GREEDY_MARGIN:
        problems.append(f"greedy margin {min(margins):.2e} < {MIN_GREEDY_MARGIN}")

    config_json = {"model_type": "mu"}
    config_json.update({k: getattr(cfg, k) for k in MU_FIELDS})
    config_json.update({"bos_token_id": BOS, "eos_token_id": EOS})

    goldens = {"encoder_out": encoder_out, "logits": logits, "logits_bf16w": logits_bf16w,
               "logits_f16w": logits_f16w}
    golden_json = {
        "case": None,
        "seed": seed,
        "encoder_input_ids": enc_ids,
        "decoder_input_ids": dec_ids,
        "greedy": {"max_new_tokens": MAX_NEW_TOKENS, "bos_token_id": BOS, "eos_token_id": EOS,
                   "input_ids": enc_ids, "output_ids": out_batch},
        "greedy_single": {"max_new_tokens": MAX_NEW_TOKENS, "bos_token_id": BOS, "eos_token_id": EOS,
                          "input_ids": [enc_rows[0]], "output_ids": out_single},
        "min_greedy_margin": round(min(margins), 6),
    }
    return sd, config_json, goldens, golden_json, problems


def make_decoder_case(torch, modeling_mu, mu_utils, spec, seed):
    n_layer = spec["n_layer"]
    base = dict(spec["config"])
    base.update(n_encoder_layer=n_layer, n_decoder_layer=0)
    cfg = modeling_mu.MuConfig(**base)
    model = build_decoder_only(torch, mu_utils, cfg, n_layer)
    gen = torch.Generator().manual_seed(seed)
    randomize(torch, mu_utils, model, gen)
    model.eval()

    V = cfg.vocab_size
    n0, n1 = spec["logits_lens"]
    rows = [random_ids(torch, gen, n0, V), random_ids(torch, gen, n1, V)]
    logits_ids = padded(rows, max(n0, n1))
    prompt = random_ids(torch, gen, spec["prompt_len"], V)

    sd = exported_state_dict(model)
    with torch.no_grad():
        ids = torch.tensor(logits_ids)
        logits = model(ids)
        logits_bf16w = with_rounded_weights(torch, model, sd, torch.bfloat16)(ids)
        logits_f16w = with_rounded_weights(torch, model, sd, torch.float16)(ids)

        seq = list(prompt)
        new, margins = [], []
        for _ in range(MAX_NEW_TOKENS):  # full recomputation, argmax over the last position
            last = model(torch.tensor([seq]))[0, -1]
            top2 = torch.topk(last, 2)
            margins.append((top2.values[0] - top2.values[1]).item())
            tok = int(torch.argmax(last).item())
            new.append(tok)
            seq.append(tok)

    problems = []
    if len(set(new)) < 4:
        problems.append(f"greedy: only {len(set(new))} distinct tokens: {new}")
    if min(margins) < MIN_GREEDY_MARGIN:
        problems.append(f"greedy margin {min(margins):.2e} < {MIN_GREEDY_MARGIN}")

    config_json = {"model_type": "mu_decoder", "n_layer": n_layer}
    config_json.update({k: getattr(cfg, k) for k in MU_FIELDS if k not in ("n_encoder_layer", "n_decoder_layer")})
    config_json.update({"bos_token_id": BOS, "eos_token_id": EOS})

    goldens = {"logits": logits, "logits_bf16w": logits_bf16w, "logits_f16w": logits_f16w}
    golden_json = {
        "case": None,
        "seed": seed,
        "logits_input_ids": logits_ids,
        "greedy": {"max_new_tokens": MAX_NEW_TOKENS, "prompt_ids": prompt, "output_ids": new},
        "min_greedy_margin": round(min(margins), 6),
    }
    return sd, config_json, goldens, golden_json, problems


# --------------------------------------------------------------------------------------------------
# Output


def write_case(torch, save_file, outdir: Path, sd, config_json, goldens, golden_json):
    outdir.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt"}
    save_file(sd, str(outdir / "model.safetensors"), metadata=meta)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()},
              str(outdir / "model-bf16.safetensors"), metadata=meta)
    save_file({k: v.to(torch.float16).contiguous() for k, v in sd.items()},
              str(outdir / "model-f16.safetensors"), metadata=meta)
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in goldens.items()},
              str(outdir / "golden.safetensors"), metadata=meta)
    (outdir / "config.json").write_text(json.dumps(config_json, indent=2) + "\n")
    (outdir / "golden.json").write_text(compact_json(golden_json) + "\n")


def compact_json(obj, indent=0):
    """JSON with one line per id row, so golden.json stays readable."""
    pad = "  " * indent
    if isinstance(obj, dict):
        items = [f'{pad}  {json.dumps(k)}: {compact_json(v, indent + 1).lstrip()}' for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and all(isinstance(r, list) for r in obj):
        return pad + "[\n" + ",\n".join(pad + "  " + json.dumps(r) for r in obj) + "\n" + pad + "]"
    return pad + json.dumps(obj)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_readme(out: Path, argv, versions, ref: Path, ref_commit: str, summaries):
    src = ref / "src" / "mu" / "models"
    lines = [
        "# Mu golden fixtures",
        "",
        "Made by `tools/goldens/make_mu_goldens.py` with the reference PyTorch code of",
        "[microsoft/encoder-decoder-slm](https://github.com/microsoft/encoder-decoder-slm) (its own `Mu`,",
        "`MuConfig` and `MuEncoderBlock` classes, fp32, CPU). Do not edit by hand; rerun the script.",
        "",
        "Command (from the repository root):",
        "",
        "```sh",
        " ".join(shlex.quote(a) for a in argv),
        "```",
        "",
        f"- reference commit: `{ref_commit}`",
        f"- `modeling_mu.py` sha256 `{sha256(src / 'modeling_mu.py')}`",
        f"- `mu_utils.py` sha256 `{sha256(src / 'mu_utils.py')}`",
    ]
    lines += [f"- {k} {v}" for k, v in versions.items()]
    lines += [
        "",
        "## Files per case",
        "",
        "- `config.json`: the reference `MuConfig` field names (qkv_embd resolved to an integer), plus",
        "  `model_type` (`mu` or `mu_decoder`), `bos_token_id` 1, `eos_token_id` 2. `mu_decoder` has `n_layer`",
        "  instead of `n_encoder_layer`/`n_decoder_layer`.",
        "- `model.safetensors` (F32), `model-bf16.safetensors` (BF16), `model-f16.safetensors` (F16): the",
        "  reference state dict without the tied `lm_head.weight`.",
        "- `golden.safetensors` (F32): `encoder_out` [B, L, n_embd] after `ln_e` (Mu cases), `logits` [B, T, V]",
        "  teacher-forced from the fp32 weights, `logits_bf16w` / `logits_f16w` from the weights rounded to",
        "  BF16 / F16 and computed in fp32. Rows are right-padded with id 0; positions at padding are included",
        "  (they are well defined: a padded query still attends to the real keys).",
        "- `golden.json`: the input ids (`encoder_input_ids`, `decoder_input_ids`; `logits_input_ids` for",
        "  `mu_decoder`) and greedy continuations. Mu: `greedy` (the padded batch) and `greedy_single` (row 0",
        "  alone) are the reference `Mu.generate(..., max_new_tokens=20, temperature=1.0, top_k=1)`, i.e. full",
        "  recomputation each step; `output_ids` start with the BOS, rows that reached EOS are padded with EOS,",
        "  and generation stops early when every row has finished. `mu_decoder`: argmax over the last",
        "  position with full recomputation, `output_ids` = the 20 new tokens only. `min_greedy_margin` is the",
        "  smallest top-1 minus top-2 logit over the greedy steps (seeds with a margin under 1e-2 are rejected).",
        "  EOS: in `gqa_mod` batch row 1 reaches EOS at step 16 (row 0 continues); in `gqa_interleaved_ntk` row",
        "  0 reaches EOS at step 10, so `greedy_single` stops early (11 ids).",
        "",
        "## Weights",
        "",
        "Not the reference's N(0, 0.02) init (which gives near-uniform logits): every Linear weight N(0, 0.4)",
        "(with N(0, 0.2) the tied head mostly repeats the current token forever),",
        "every bias N(0, 0.1), every RMSNorm weight 1 + N(0, 0.1), the embedding N(0, 1); drawn from",
        "`torch.Generator().manual_seed(seed)` (seed in `golden.json`), which also draws the input ids from",
        "[3, vocab).",
        "",
        "## Cases",
        "",
        "| case | config | notes |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {cfg} | {note} |" for name, cfg, note in summaries]
    lines.append("")
    (out / "README.md").write_text("\n".join(lines))


NOTES = {
    "gqa_mod": "GQA with is_interleaved false (query head h reads KV head h mod n_kv_head), rope_factor 1",
    "gqa_interleaved_ntk": "GQA with is_interleaved true (h // groups), NTK rope_factor 2 with block_size 8: "
                           "the padded encoder length 13 and the greedy decoder lengths > 8 change the RoPE base",
    "mha": "n_kv_head = n_head, qkv_embd null in MuConfig = n_embd",
    "mu_decoder": "decoder-only twin: reference MuEncoderBlock with attn.is_causal = True, tied head",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--reference", required=True, type=Path,
                        help="checkout of microsoft/encoder-decoder-slm (holds src/mu/models/modeling_mu.py)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT.relative_to(REPO_ROOT)} in the repository)")
    parser.add_argument("--reference-commit", help="commit id of the reference checkout, for README.md")
    parser.add_argument("--reference-git-dir", type=Path,
                        help="git dir of the reference (to read its commit with `git rev-parse HEAD`)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of: {', '.join(CASES)} (default: all)")
    args = parser.parse_args(argv)

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        fail(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")

    ref_commit = args.reference_commit
    if ref_commit is None and args.reference_git_dir is not None:
        try:
            ref_commit = subprocess.run(["git", f"--git-dir={args.reference_git_dir}", "rev-parse", "HEAD"],
                                        check=True, capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as e:
            fail(f"cannot read the reference commit from {args.reference_git_dir}: {e}")
    ref_commit = ref_commit or "unknown"

    modeling_mu, mu_utils = import_reference(args.reference.resolve())
    import safetensors
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "safetensors": safetensors.__version__, "transformers": transformers.__version__}

    summaries = []
    for name in cases:
        spec = CASES[name]
        make = make_mu_case if spec["kind"] == "mu" else make_decoder_case
        for attempt in range(MAX_SEED_ATTEMPTS):
            seed = spec["seed"] + attempt
            sd, config_json, goldens, golden_json, problems = make(torch, modeling_mu, mu_utils, spec, seed)
            if not problems:
                break
            print(f"{name}: seed {seed} rejected: {'; '.join(problems)}", file=sys.stderr)
        else:
            fail(f"{name}: no acceptable seed in {MAX_SEED_ATTEMPTS} attempts")
        golden_json["case"] = name
        write_case(torch, save_file, args.out / name, sd, config_json, goldens, golden_json)
        n_params = sum(v.numel() for v in sd.values())
        cfg_desc = ", ".join(f"{k} {v}" for k, v in config_json.items()
                             if k not in ("model_type", "dropout", "pad_token_id", "bos_token_id", "eos_token_id"))
        summaries.append((name, f"{cfg_desc}; {n_params} params; seed {seed}", NOTES[name]))
        g = golden_json["greedy"]
        print(f"{name}: seed {seed}, {n_params} params, min greedy margin {golden_json['min_greedy_margin']}, "
              f"greedy {g['output_ids']}")

    # Record the command as run from the repository root when possible.
    script = Path(__file__).resolve()
    shown = [sys.executable if Path(sys.executable).is_absolute() else "python",
             os.path.relpath(script, REPO_ROOT)] + (argv if argv is not None else sys.argv[1:])
    if set(cases) == set(CASES):
        write_readme(args.out, shown, versions, args.reference.resolve(), ref_commit, summaries)
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
