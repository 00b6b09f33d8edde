#!/usr/bin/env python3
"""Round-trip tests for tools/convert_mu.py against the reference Mu class.

Builds a tiny reference ``Mu``, saves ``model.pt`` the way the reference's ``save_checkpoint`` does,
converts it to safetensors and back, and checks that the result loads into ``Mu`` with
``load_state_dict(strict=True)`` with bit-identical tensors and logits; plus the error cases.

Run by hand:

    /work/venv/bin/python tools/test_convert_mu.py --reference /work/mu-ref

or with pytest (``MU_REFERENCE=/work/mu-ref pytest tools/test_convert_mu.py``); without a reference
checkout the tests are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import convert_mu  # noqa: E402

TINY = dict(n_encoder_layer=2, n_decoder_layer=1, n_embd=32, qkv_embd=16, is_interleaved=False, hidden_dim=64,
            n_head=2, n_kv_head=1, block_size=16, vocab_size=50)


def _reference():
    ref = os.environ.get("MU_REFERENCE")
    if not ref or not (Path(ref) / "src" / "mu" / "models" / "modeling_mu.py").is_file():
        try:
            import pytest
            pytest.skip("set MU_REFERENCE to a checkout of microsoft/encoder-decoder-slm")
        except ImportError:
            raise SystemExit("set MU_REFERENCE (or pass --reference) to a checkout of microsoft/encoder-decoder-slm")
    src = str(Path(ref) / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    import mu.models.modeling_mu as modeling_mu
    return modeling_mu


def _tiny_model(modeling_mu, dtype=None, **overrides):
    import torch
    cfg = modeling_mu.MuConfig(**{**TINY, **overrides})
    model = modeling_mu.Mu(cfg, device="cpu")
    with torch.no_grad():  # non-zero biases and norm weights, so a mix-up would show
        g = torch.Generator().manual_seed(7)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def _save_like_reference(model, path: Path, with_config=True, **extra):
    """As mu/checkpoint.py save_checkpoint: {"model_state_dict", "model_config", ["global_step", "score"]}."""
    import torch
    state = {"model_state_dict": model.state_dict()}
    if with_config:
        state["model_config"] = dataclasses.asdict(model.config)
    state.update(extra)
    torch.save(state, path)


def _logits(model, torch):
    enc = torch.tensor([[5, 6, 7, 8, 9, 0], [10, 11, 12, 0, 0, 0]])
    dec = torch.tensor([[1, 20, 21], [1, 22, 0]])
    with torch.no_grad():
        return model(enc, dec).logits


def _expect_error(fn, *needles):
    try:
        fn()
    except convert_mu.ConvertError as e:
        msg = str(e)
        for n in needles:
            assert n in msg, f"error message {msg!r} does not mention {n!r}"
        return msg
    raise AssertionError("expected a ConvertError")


def test_round_trip_fp32_bit_identical():
    import torch
    modeling_mu = _reference()
    model = _tiny_model(modeling_mu)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _save_like_reference(model, d / "model.pt", global_step=3, score=0.5)
        convert_mu.to_safetensors(d / "model.pt", d / "enc", bos=1, eos=2)
        from safetensors.torch import load_file
        st = load_file(str(d / "enc" / "model.safetensors"))
        assert "lm_head.weight" not in st, "tied lm_head.weight should be dropped"
        cfg = json.loads((d / "enc" / "config.json").read_text())
        assert cfg["model_type"] == "mu" and cfg["bos_token_id"] == 1 and cfg["eos_token_id"] == 2
        assert cfg["qkv_embd"] == 16 and cfg["n_kv_head"] == 1
        assert not any(p.name.endswith(".tmp") for p in (d / "enc").iterdir()), "temporary file left behind"

        convert_mu.to_pt(d / "enc", d / "back.pt")
        ckpt = torch.load(d / "back.pt", weights_only=True)
        assert ckpt["model_config"] == dataclasses.asdict(model.config)
        fresh = modeling_mu.Mu(modeling_mu.MuConfig(**ckpt["model_config"]), device="cpu").eval()
        fresh.load_state_dict(ckpt["model_state_dict"], strict=True)
        orig = model.state_dict()
        back = fresh.state_dict()
        assert list(orig) == list(ckpt["model_state_dict"]), "key order differs from the reference"
        for k, v in orig.items():
            assert back[k].dtype == v.dtype and torch.equal(back[k], v), f"{k} differs after the round trip"
        assert torch.equal(_logits(model, torch), _logits(fresh, torch))


def test_round_trip_bf16_keep_and_dtype_flags():
    import torch
    from safetensors.torch import load_file
    modeling_mu = _reference()
    model = _tiny_model(modeling_mu, dtype=torch.bfloat16)  # the released model is stored in bf16
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _save_like_reference(model, d / "model.pt")
        convert_mu.to_safetensors(d / "model.pt", d / "keep")
        st = load_file(str(d / "keep" / "model.safetensors"))
        assert all(v.dtype == torch.bfloat16 for v in st.values())
        assert json.loads((d / "keep" / "config.json").read_text())["eos_token_id"] == 32000
        convert_mu.to_pt(d / "keep", d / "back.pt")
        ckpt = torch.load(d / "back.pt", weights_only=True)
        for k, v in model.state_dict().items():
            assert torch.equal(ckpt["model_state_dict"][k], v) and ckpt["model_state_dict"][k].dtype == v.dtype, k
        for flag, dt in (("f32", torch.float32), ("f16", torch.float16)):
            convert_mu.to_safetensors(d / "model.pt", d / flag, dtype=flag)
            st = load_file(str(d / flag / "model.safetensors"))
            assert all(v.dtype == dt for v in st.values())
            assert torch.equal(st["transformer.wte.weight"], model.transformer.wte.weight.to(dt))


def test_gqa_interleaved_and_mha_configs():
    import torch
    modeling_mu = _reference()
    for overrides in (dict(is_interleaved=True, n_head=4, n_kv_head=2, qkv_embd=32, rope_factor=2.0),
                      dict(n_head=2, n_kv_head=2, qkv_embd=None)):
        model = _tiny_model(modeling_mu, **overrides)
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            _save_like_reference(model, d / "model.pt")
            convert_mu.to_safetensors(d / "model.pt", d / "enc")
            convert_mu.to_pt(d / "enc", d / "back.pt")
            ckpt = torch.load(d / "back.pt", weights_only=True)
            fresh = modeling_mu.Mu(modeling_mu.MuConfig(**ckpt["model_config"]), device="cpu").eval()
            fresh.load_state_dict(ckpt["model_state_dict"], strict=True)
            assert torch.equal(_logits(model, torch), _logits(fresh, torch))


def test_untied_head_is_kept():
    import torch
    from safetensors.torch import load_file
    modeling_mu = _reference()
    model = _tiny_model(modeling_mu)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
        torch.save({"model_state_dict": sd, "model_config": dataclasses.asdict(model.config)}, d / "model.pt")
        convert_mu.to_safetensors(d / "model.pt", d / "enc")
        st = load_file(str(d / "enc" / "model.safetensors"))
        assert torch.equal(st["lm_head.weight"], sd["lm_head.weight"])
        convert_mu.to_pt(d / "enc", d / "back.pt")
        back = torch.load(d / "back.pt", weights_only=True)["model_state_dict"]
        assert torch.equal(back["lm_head.weight"], sd["lm_head.weight"])


def test_missing_config_uses_330m_defaults():
    modeling_mu = _reference()
    model = _tiny_model(modeling_mu)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _save_like_reference(model, d / "model.pt", with_config=False)
        # Without model_config the defaults (330M: 20+10 layers, n_embd 1024) apply, which this tiny model
        # does not match: a clear error, no output written.
        _expect_error(lambda: convert_mu.to_safetensors(d / "model.pt", d / "enc"),
                      "missing tensor", "transformer.e.2.", "20+10 layers", "n_embd 1024")
        assert not (d / "enc" / "model.safetensors").exists()


def test_expected_shapes_match_reference():
    modeling_mu = _reference()
    for overrides in ({}, dict(n_encoder_layer=3, n_decoder_layer=2, is_interleaved=True),
                      dict(qkv_embd=None, n_kv_head=2)):
        model = _tiny_model(modeling_mu, **overrides)
        ref = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
        ours = convert_mu.expected_shapes(convert_mu.normalize_config(dataclasses.asdict(model.config), "cfg"))
        assert ref == ours and list(ref) == list(ours), "names, shapes or order differ from the reference"
    # The MuConfig defaults are the released model: 332,042,240 parameters (tied head counted once).
    import math
    defaults = convert_mu.expected_shapes(convert_mu.normalize_config({}, "defaults"))
    assert sum(math.prod(s) for s in defaults.values()) == 332_042_240


def test_errors():
    import torch
    modeling_mu = _reference()
    model = _tiny_model(modeling_mu)
    cfg = dataclasses.asdict(model.config)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)

        def save(sd, config=cfg):
            torch.save({"model_state_dict": sd, "model_config": config}, d / "bad.pt")
            return lambda: convert_mu.to_safetensors(d / "bad.pt", d / "out")

        sd = dict(model.state_dict())
        del sd["transformer.h.0.cross_attn.k_linear.bias"]
        _expect_error(save(sd), "missing tensor", "transformer.h.0.cross_attn.k_linear.bias")
        sd = dict(model.state_dict(), **{"transformer.e.9.ln1.weight": torch.ones(32)})
        _expect_error(save(sd), "unexpected tensor", "transformer.e.9.ln1.weight")
        sd = dict(model.state_dict(), **{"transformer.ln_e.weight": torch.ones(33)})
        _expect_error(save(sd), "transformer.ln_e.weight", "[33]", "[32]")
        _expect_error(save(dict(model.state_dict()), dict(cfg, n_head=3)), "divisible")
        _expect_error(save(dict(model.state_dict()), dict(cfg, n_embd="32")), "n_embd", "integer")
        _expect_error(save(dict(model.state_dict()), dict(cfg, colour=1)), "unknown config field", "colour")
        torch.save({"weights": {}}, d / "notmu.pt")
        _expect_error(lambda: convert_mu.to_safetensors(d / "notmu.pt", d / "out"), "model_state_dict")
        (d / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
        _expect_error(lambda: convert_mu.to_safetensors(d / "trunc.pt", d / "out"), "cannot load")
        _expect_error(lambda: convert_mu.to_safetensors(d / "nope.pt", d / "out"), "no such file")

        # to-pt side
        _save_like_reference(model, d / "model.pt")
        convert_mu.to_safetensors(d / "model.pt", d / "enc")
        good_cfg = json.loads((d / "enc" / "config.json").read_text())
        (d / "enc" / "config.json").write_text(json.dumps({k: v for k, v in good_cfg.items() if k != "hidden_dim"}))
        _expect_error(lambda: convert_mu.to_pt(d / "enc", d / "x.pt"), "missing config field", "hidden_dim")
        (d / "enc" / "config.json").write_text(json.dumps(dict(good_cfg, is_interleaved=1)))
        _expect_error(lambda: convert_mu.to_pt(d / "enc", d / "x.pt"), "is_interleaved")
        (d / "enc" / "config.json").write_text(json.dumps(dict(good_cfg, model_type="mu_decoder")))
        _expect_error(lambda: convert_mu.to_pt(d / "enc", d / "x.pt"), "mu_decoder")
        (d / "enc" / "config.json").write_text("{not json")
        _expect_error(lambda: convert_mu.to_pt(d / "enc", d / "x.pt"), "not valid JSON")
        (d / "enc" / "config.json").write_text(json.dumps(dict(good_cfg, n_decoder_layer=2)))
        _expect_error(lambda: convert_mu.to_pt(d / "enc", d / "x.pt"), "missing tensor", "transformer.h.1.")
        (d / "enc" / "config.json").write_text(json.dumps(good_cfg))
        data = (d / "enc" / "model.safetensors").read_bytes()
        (d / "enc" / "model.safetensors").write_bytes(data[: len(data) // 2])
        _expect_error(lambda: convert_mu.to_pt(d / "enc", d / "x.pt"), "cannot read safetensors")
        assert not (d / "x.pt").exists()

        # CLI: non-zero exit with a message
        assert convert_mu.main(["to-pt", str(d / "enc"), str(d / "x.pt")]) == 1


def _run_all():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"PASS {name}")
        except Exception:
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed}/{len(tests)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="checkout of microsoft/encoder-decoder-slm "
                        "(default: $MU_REFERENCE)")
    args = parser.parse_args()
    if args.reference is not None:
        os.environ["MU_REFERENCE"] = str(args.reference)
    if not os.environ.get("MU_REFERENCE"):
        parser.error("pass --reference or set MU_REFERENCE")
    sys.exit(_run_all())
