#!/usr/bin/env python3
"""Causal-LM training goldens for the decoder-only baseline ``mu_decoder`` (issue 6), by PyTorch.

Builds the reference blocks exactly as ``make_mu_goldens.py`` does for ``mu_decoder`` (``build_decoder_only``:
wte -> n_layer x the reference ``MuEncoderBlock`` with ``attn.is_causal = True`` -> ln_f -> tied head), loads
``Tests/EncoreTests/Fixtures/mu/mu_decoder/model.safetensors``, and in eval mode (dropout off) computes the
paper's baseline loss: a causal LM on ``source ‖ target`` with the loss on the target only. For each example
the sequence is ``source + target + [EOS]``; the input is that sequence without its last token, the label at
position i is token i + 1 when i + 1 >= len(source) (the target tokens and EOS) and pad elsewhere; rows are
right-padded with pad (0), and the loss is ``F.cross_entropy(..., ignore_index=pad)`` (mean over the labels).

Writes ``OUT/mu_decoder.safetensors`` (F32): ``loss`` [1], ``logits`` [B, T, V], ``grad.<name>`` for every
parameter (wte gets embedding + head), and ``OUT/mu_decoder.json`` with the sources, targets, inputs, labels.

Usage (from the repository root):

    /work/venv/bin/python tools/goldens/make_mu_decoder_grad_goldens.py --reference /work/mu-ref
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_mu_goldens as mg  # noqa: E402  (build_decoder_only, import_reference, MU_FIELDS)

FIXTURES = mg.REPO_ROOT / "Tests" / "EncoreTests" / "Fixtures"
PAD, EOS = 0, 2
# Two examples of different total lengths (the shorter row is padded); a target token equal to a source token.
SOURCES = [[69, 23, 13, 92, 61], [57, 22, 52]]
TARGETS = [[10, 19, 66, 13], [96, 27]]


def causal_lm_rows(sources, targets):
    inputs, labels = [], []
    for s, t in zip(sources, targets):
        seq = s + t + [EOS]
        inputs.append(seq[:-1])
        labels.append([seq[i + 1] if i + 1 >= len(s) else PAD for i in range(len(seq) - 1)])
    T = max(len(r) for r in inputs)
    return ([r + [PAD] * (T - len(r)) for r in inputs], [r + [PAD] * (T - len(r)) for r in labels])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path, help="checkout of microsoft/encoder-decoder-slm")
    ap.add_argument("--out", type=Path, default=FIXTURES / "mu_grads")
    args = ap.parse_args()
    modeling_mu, mu_utils = mg.import_reference(args.reference.resolve())
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file

    torch.use_deterministic_algorithms(True)
    case = FIXTURES / "mu" / "mu_decoder"
    cfg_json = json.loads((case / "config.json").read_text())
    n_layer = cfg_json["n_layer"]
    fields = {k: cfg_json[k] for k in mg.MU_FIELDS if k not in ("n_encoder_layer", "n_decoder_layer")}
    cfg = modeling_mu.MuConfig(**fields, n_encoder_layer=n_layer, n_decoder_layer=0)
    model = mg.build_decoder_only(torch, mu_utils, cfg, n_layer)
    model.load_state_dict(load_file(str(case / "model.safetensors")), strict=True)   # tied head: no lm_head entry
    model.eval()

    inputs, labels = causal_lm_rows(SOURCES, TARGETS)
    ids, lab = torch.tensor(inputs), torch.tensor(labels)
    logits = model(ids)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), lab.reshape(-1), ignore_index=PAD)
    loss.backward()
    tensors = {"loss": loss.detach().reshape(1), "logits": logits.detach()}
    for n, p in model.named_parameters():
        tensors["grad." + n] = p.grad.detach().clone()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(args.out / "mu_decoder.safetensors"))
    meta = dict(case="mu_decoder", sources=SOURCES, targets=TARGETS, inputs=inputs, labels=labels,
                loss=loss.item(), torch=torch.__version__)
    (args.out / "mu_decoder.json").write_text(json.dumps(meta, indent=1) + "\n")
    (args.out / "mu_decoder.safetensors").chmod(0o644)
    print("mu_decoder loss", loss.item(), "parameters", len([k for k in tensors if k.startswith("grad.")]))


if __name__ == "__main__":
    main()
