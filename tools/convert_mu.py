#!/usr/bin/env python3
"""Convert between the reference Mu checkpoint (model.pt) and Encore's model folder.

The reference (microsoft/encoder-decoder-slm) saves ``torch.save({"model_state_dict": ...,
"model_config": asdict(MuConfig), ["global_step", "score"]})``; Encore reads a folder with ``config.json``
(the MuConfig field names plus ``model_type``, ``bos_token_id``, ``eos_token_id``) and
``model.safetensors`` (the same tensor names; ``lm_head.weight`` omitted when tied to the embedding).

Usage:

    python tools/convert_mu.py to-safetensors model.pt OUTDIR [--dtype keep|f32|bf16|f16] [--bos 1] [--eos 32000]
    python tools/convert_mu.py to-pt MODELDIR OUT.pt

``to-safetensors`` takes the config from the checkpoint's ``model_config`` when present, otherwise the
MuConfig defaults (the released 330M model). ``to-pt`` writes a checkpoint that the reference loads with
``Mu.load_state_dict(strict=True)`` (``lm_head.weight`` re-added as the embedding tensor). Both check the
tensor names and shapes against the config and refuse a mismatch. Outputs are written atomically
(temporary file, fsync, rename). Needs torch and safetensors (PyPI); not the reference code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

# The reference MuConfig dataclass, field order and defaults (= the released 330M text model).
MU_DEFAULTS = {
    "n_encoder_layer": 20,
    "n_decoder_layer": 10,
    "n_embd": 1024,
    "qkv_embd": 384,
    "is_interleaved": False,
    "hidden_dim": 4096,
    "n_head": 6,
    "n_kv_head": 3,
    "block_size": 1024,
    "dropout": 0.1,
    "rope_theta": 10000,
    "rope_factor": 1.0,
    "pad_token_id": 0,
    "vocab_size": 32128,
}
INT_FIELDS = {"n_encoder_layer", "n_decoder_layer", "n_embd", "qkv_embd", "hidden_dim", "n_head", "n_kv_head",
              "block_size", "pad_token_id", "vocab_size"}
FLOAT_FIELDS = {"dropout", "rope_factor", "rope_theta"}
DEFAULT_BOS, DEFAULT_EOS = 1, 32000  # the Mu tokenizer (Phi-3.5-mini): <s> = 1, <|endoftext|> = 32000
ENCORE_EXTRA = ("model_type", "bos_token_id", "eos_token_id")
TIED_HEAD = "lm_head.weight"
EMBEDDING = "transformer.wte.weight"


class ConvertError(Exception):
    """A problem with the user's input; printed without a traceback."""


# --------------------------------------------------------------------------------------------------
# Config and expected tensors


def normalize_config(raw: dict, where: str, require_all: bool = False) -> dict:
    """Validate a MuConfig-shaped dict; resolve qkv_embd None -> n_embd. Returns the MuConfig fields only.

    Missing fields take the MuConfig defaults, unless require_all (Encore's config.json must be complete).
    """
    if not isinstance(raw, dict):
        raise ConvertError(f"{where}: the config is not a JSON object / dict")
    if require_all:
        absent = [k for k in MU_DEFAULTS if k not in raw]
        if absent:
            raise ConvertError(f"{where}: missing config field(s) {absent}")
    unknown = sorted(set(raw) - set(MU_DEFAULTS) - set(ENCORE_EXTRA))
    if unknown:
        raise ConvertError(f"{where}: unknown config field(s) {unknown}; expected the MuConfig fields "
                           f"{list(MU_DEFAULTS)}")
    cfg = {}
    for key, default in MU_DEFAULTS.items():
        value = raw.get(key, default)
        if key == "qkv_embd" and value is None:
            value = raw.get("n_embd", MU_DEFAULTS["n_embd"])
        if key == "is_interleaved":
            if not isinstance(value, bool):
                raise ConvertError(f"{where}: config field is_interleaved must be true/false, got {value!r}")
        elif key in INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConvertError(f"{where}: config field {key} must be an integer, got {value!r}")
            if value < 0 or (value == 0 and key not in ("pad_token_id", "n_decoder_layer", "n_encoder_layer")):
                raise ConvertError(f"{where}: config field {key} must be positive, got {value}")
        elif key in FLOAT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConvertError(f"{where}: config field {key} must be a number, got {value!r}")
        cfg[key] = value
    if cfg["qkv_embd"] % cfg["n_head"]:
        raise ConvertError(f"{where}: qkv_embd {cfg['qkv_embd']} is not divisible by n_head {cfg['n_head']}")
    if cfg["n_head"] % cfg["n_kv_head"]:
        raise ConvertError(f"{where}: n_head {cfg['n_head']} is not divisible by n_kv_head {cfg['n_kv_head']}")
    return cfg


def expected_shapes(cfg: dict) -> dict:
    """Reference state-dict names -> shapes for a Mu config, without lm_head.weight."""
    C, A, H, V = cfg["n_embd"], cfg["qkv_embd"], cfg["hidden_dim"], cfg["vocab_size"]
    kv = cfg["n_kv_head"] * (A // cfg["n_head"])

    def attn(prefix):
        return {
            f"{prefix}.q_linear.weight": (A, C), f"{prefix}.q_linear.bias": (A,),
            f"{prefix}.k_linear.weight": (kv, C), f"{prefix}.k_linear.bias": (kv,),
            f"{prefix}.v_linear.weight": (kv, C), f"{prefix}.v_linear.bias": (kv,),
            f"{prefix}.out_linear.weight": (C, A), f"{prefix}.out_linear.bias": (C,),
        }

    def mlp(prefix):
        return {f"{prefix}.fc1.weight": (H, C), f"{prefix}.fc1.bias": (H,),
                f"{prefix}.fc2.weight": (C, H), f"{prefix}.fc2.bias": (C,)}

    shapes = {EMBEDDING: (V, C)}
    for i in range(cfg["n_encoder_layer"]):
        p = f"transformer.e.{i}"
        shapes.update({f"{p}.ln1.weight": (C,), f"{p}.ln2.weight": (C,)})
        shapes.update(attn(f"{p}.attn"))
        shapes.update(mlp(f"{p}.mlp"))
    shapes["transformer.ln_e.weight"] = (C,)
    for i in range(cfg["n_decoder_layer"]):
        p = f"transformer.h.{i}"
        shapes.update({f"{p}.ln1.weight": (C,), f"{p}.ln2.weight": (C,), f"{p}.ln3.weight": (C,)})
        shapes.update(attn(f"{p}.causal_attn"))
        shapes.update(attn(f"{p}.cross_attn"))
        shapes.update(mlp(f"{p}.mlp"))
    shapes["transformer.ln_f.weight"] = (C,)
    return shapes


def check_tensors(sd: dict, cfg: dict, where: str) -> None:
    """Names and shapes of sd (which may hold lm_head.weight) against the config; raises ConvertError."""
    shapes = expected_shapes(cfg)
    names = set(sd) - {TIED_HEAD}
    missing = [k for k in shapes if k not in names]                 # in model order
    unexpected = sorted(names - set(shapes))
    wrong = [f"{k} has shape {list(sd[k].shape)}, the config implies {list(shape)}"
             for k, shape in shapes.items() if k in names and tuple(sd[k].shape) != shape]
    if TIED_HEAD in sd and tuple(sd[TIED_HEAD].shape) != shapes[EMBEDDING]:
        wrong.append(f"{TIED_HEAD} has shape {list(sd[TIED_HEAD].shape)}, "
                     f"the config implies {list(shapes[EMBEDDING])}")
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_few(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) with the wrong shape: {_few(wrong, 3)}")
    if problems:
        raise ConvertError(f"{where}: tensors do not match the config "
                           f"({cfg['n_encoder_layer']}+{cfg['n_decoder_layer']} layers, n_embd {cfg['n_embd']}): "
                           + "; ".join(problems))


def _few(names, n=6):
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


# --------------------------------------------------------------------------------------------------
# Atomic writes


def _atomic_write(path: Path, write) -> None:
    """write(tmp_path) then fsync and rename over path; the temporary file is removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# --------------------------------------------------------------------------------------------------
# Commands


DTYPES = {"keep": None, "f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def to_safetensors(model_pt: Path, outdir: Path, dtype: str = "keep", bos: int | None = None,
                   eos: int | None = None) -> dict:
    """model.pt -> OUTDIR/{config.json, model.safetensors}. Returns the written config."""
    import torch
    from safetensors.torch import save_file

    if not model_pt.is_file():
        raise ConvertError(f"{model_pt}: no such file")
    try:
        ckpt = torch.load(model_pt, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, disallowed globals, ...
        raise ConvertError(f"{model_pt}: cannot load as a torch checkpoint: {e}") from None
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise ConvertError(f"{model_pt}: not a reference Mu checkpoint (expected a dict with 'model_state_dict')")
    sd = ckpt["model_state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConvertError(f"{model_pt}: 'model_state_dict' is not a dict of tensors")

    raw_cfg = ckpt.get("model_config")
    cfg = normalize_config(raw_cfg if raw_cfg is not None else {}, f"{model_pt} model_config")
    check_tensors(sd, cfg, str(model_pt))

    out = {}
    for name, t in sd.items():
        if name == TIED_HEAD and torch.equal(t, sd[EMBEDDING]) and t.dtype == sd[EMBEDDING].dtype:
            continue  # tied: Encore re-ties it to transformer.wte.weight
        if not t.is_floating_point():
            raise ConvertError(f"{model_pt}: tensor {name} has non-float dtype {t.dtype}")
        if DTYPES[dtype] is not None:
            t = t.to(getattr(torch, DTYPES[dtype]))
        elif t.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ConvertError(f"{model_pt}: tensor {name} has dtype {t.dtype}; use --dtype f32|bf16|f16")
        out[name] = t.detach().contiguous().clone()

    config = {"model_type": "mu", **cfg,
              "bos_token_id": DEFAULT_BOS if bos is None else bos,
              "eos_token_id": DEFAULT_EOS if eos is None else eos}
    outdir.mkdir(parents=True, exist_ok=True)
    _atomic_write(outdir / "model.safetensors", lambda tmp: save_file(out, tmp, metadata={"format": "pt"}))
    _write_text(outdir / "config.json", json.dumps(config, indent=2) + "\n")
    return config


def to_pt(modeldir: Path, out_pt: Path) -> None:
    """MODELDIR/{config.json, model.safetensors} -> reference checkpoint."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, st_path = modeldir / "config.json", modeldir / "model.safetensors"
    for p in (cfg_path, st_path):
        if not p.is_file():
            raise ConvertError(f"{p}: no such file")
    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConvertError(f"{cfg_path}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConvertError(f"{cfg_path}: not a JSON object")
    model_type = raw.get("model_type", "mu")
    if model_type != "mu":
        raise ConvertError(f"{cfg_path}: model_type {model_type!r} cannot go back to the reference "
                           "(only 'mu' has a reference checkpoint format)")
    cfg = normalize_config(raw, str(cfg_path), require_all=True)
    try:
        sd = load_file(str(st_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConvertError(f"{st_path}: cannot read safetensors: {e}") from None
    check_tensors(sd, cfg, str(st_path))
    if TIED_HEAD not in sd:
        sd[TIED_HEAD] = sd[EMBEDDING]  # the same tensor, as the reference's tied state_dict holds it
    order = list(expected_shapes(cfg)) + [TIED_HEAD]
    # Reference order: transformer.* in module order, then lm_head.weight.
    sd = {k: sd[k] for k in order}
    ckpt = {"model_state_dict": sd, "model_config": cfg}
    _atomic_write(out_pt, lambda tmp: torch.save(ckpt, tmp))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="convert_mu.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-safetensors", help="reference model.pt -> Encore model folder")
    a.add_argument("model_pt", type=Path, metavar="MODEL.pt")
    a.add_argument("outdir", type=Path, metavar="OUTDIR")
    a.add_argument("--dtype", choices=list(DTYPES), default="keep",
                   help="dtype of the stored tensors (default: keep the checkpoint's)")
    a.add_argument("--bos", type=int, help=f"bos_token_id for config.json (default {DEFAULT_BOS})")
    a.add_argument("--eos", type=int, help=f"eos_token_id for config.json (default {DEFAULT_EOS})")
    b = sub.add_parser("to-pt", help="Encore model folder -> reference model.pt")
    b.add_argument("modeldir", type=Path, metavar="MODELDIR")
    b.add_argument("out_pt", type=Path, metavar="OUT.pt")
    args = parser.parse_args(argv)
    try:
        if args.command == "to-safetensors":
            config = to_safetensors(args.model_pt, args.outdir, args.dtype, args.bos, args.eos)
            print(f"wrote {args.outdir}/config.json and model.safetensors "
                  f"({config['n_encoder_layer']}+{config['n_decoder_layer']} layers, n_embd {config['n_embd']})")
        else:
            to_pt(args.modeldir, args.out_pt)
            print(f"wrote {args.out_pt}")
    except ConvertError as e:
        print(f"convert_mu.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
