#!/usr/bin/env python3
"""Distillation goldens with a real decoder-only teacher: a tiny random Hugging Face ``LlamaForCausalLM``.

Writes the teacher fixture ``Tests/EncoreTests/Fixtures/tiny_llama_teacher/`` (``config.json`` +
``model.safetensors`` with transformers' names: 2 layers, d 32, 4 heads / 2 KV heads, SwiGLU 64, vocabulary 97,
untied head; weights N(0, 0.3), embeddings N(0, 1), norms 1 + N(0, 0.1), seed 97), which Encore loads with
``ModelRegistry.load``, and ``Tests/EncoreTests/Fixtures/mu_grads/kd_llama.json`` and ``kd_llama_<student>.safetensors``:

For two students — the Mu fixture ``gqa_mod`` (the reference ``Mu``) and its decoder-only twin ``mu_decoder``
(the reference ``MuEncoderBlock`` made causal, as ``make_mu_goldens.build_decoder_only``), both vocabulary 101, so
both vocabularies are cut to the teacher's 97 — and two target cases:

- ``data``: the distillation targets are the data's target + EOS (padded to T), so the KD decoder input equals the
  cross-entropy decoder input;
- ``generated``: fixed "generated" targets (EOS inside, then padding) different from the data, as the reference's
  on-policy ``KDDataset`` would produce;

the reference loss in eval mode (dropout off), α = 0.9:

- Mu student: ``mu.train_text2text_by_kd.KDModel.forward`` itself (peft import stubbed), the HF teacher called with
  ``input_ids`` = [source left-padded to E ‖ target] and ``attention_mask`` (0 on the left padding and on target
  padding), logits sliced from E − 1 for T positions, ``F.kl_div(..., reduction="batchmean", log_target=True)``
  over every position, + (1 − α)·``Mu.forward(..., targets).loss``;
- decoder-only student (the reference has none; the same KDModel formula): the student reads
  ``source ‖ target[:-1]`` (rows right-padded), its position |source| − 1 + t is compared with the teacher's
  E − 1 + t; the cross-entropy is the causal LM on ``source ‖ target + EOS`` with the loss on the target only.

Stored per ``<student>.<case>``: ``loss``, ``kd_loss``, ``ce_loss`` [1], ``teacher_logits`` [B, T, 97] (the slice),
``grad.<name>`` for every student parameter; and per student (case ``data``) ten optimizer steps of the reference
recipe — ``mu.train.get_optimizer`` (``torch.optim.AdamW``, betas (0.9, 0.98), eps 1e-8, decay 0.01 on >= 2-D
parameters; unfused if fused is unavailable) + ``mu.train.get_scheduler`` (warmup 2, cosine to 0 at 10) +
``clip_grad_norm_(1.0)``, lr 1e-2 — as ``<student>.step_loss``, ``step_kd``, ``step_ce``, ``step_grad_norm``,
``step_lr`` [10] and ``<student>.after.<name>``.

Usage (from the repository root; torch 2.13 + transformers 5.24 from PyPI):

    /work/venv/bin/python tools/goldens/make_kd_llama_goldens.py --reference /work/mu-ref
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_mu_goldens as mg  # noqa: E402  (build_decoder_only, import_reference, MU_FIELDS)

FIXTURES = mg.REPO_ROOT / "Tests" / "EncoreTests" / "Fixtures"
TEACHER_DIR = FIXTURES / "tiny_llama_teacher"
PAD, BOS, EOS = 0, 1, 2
ALPHA = 0.9
E, T = 6, 5                           # encoder_seq_len, decoder_seq_len
SOURCES = [[69, 23, 13, 92, 61], [57, 22, 52], [8, 40, 33, 71, 15, 27, 90]]     # the last one is truncated to E
TARGETS = [[10, 19, 66], [96, 27], [44, 45, 46, 47, 48, 49]]                     # the last one is truncated to T
GENERATED = [[31, 2], [77, 78, 79, 80, 81], [12, 13, 2]]                         # EOS inside, shorter rows padded
STEPS, LR, WARMUP, MAX_GRAD_NORM, WEIGHT_DECAY = 10, 1e-3, 2, 1.0, 0.01
TEACHER_CONFIG = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)


def fit(ids, n):
    return ids[:n] + [PAD] * max(0, n - len(ids))


def make_teacher(torch):
    from transformers import LlamaConfig, LlamaForCausalLM
    from safetensors.torch import save_file
    cfg = LlamaConfig(**TEACHER_CONFIG, attention_bias=False, mlp_bias=False, hidden_act="silu")
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(97)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    TEACHER_DIR.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, str(TEACHER_DIR / "model.safetensors"))
    (TEACHER_DIR / "model.safetensors").chmod(0o644)
    config = dict(model_type="llama", architectures=["LlamaForCausalLM"], **TEACHER_CONFIG, rope_scaling=None,
                  attention_bias=False, mlp_bias=False, hidden_act="silu")
    (TEACHER_DIR / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    # the saved folder is what the fixture holds: reload it with transformers as a check
    again = LlamaForCausalLM.from_pretrained(str(TEACHER_DIR), attn_implementation="eager").eval()
    ids = torch.tensor([[5, 9, 13, 40]])
    assert torch.allclose(again(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)
    return model


def teacher_inputs(torch, targets):
    """[source left-padded to E ‖ target padded to T] and its attention mask, as KDDataset._getitem_kd."""
    ids, mask = [], []
    for s, t in zip(SOURCES, targets):
        src = s[:E]
        tgt = fit(t[:T], T)
        ids.append([PAD] * (E - len(src)) + src + tgt)
        mask.append([0] * (E - len(src)) + [1] * len(src) + [int(x != PAD) for x in tgt])
    return torch.tensor(ids), torch.tensor(mask)


def data_targets():
    return [(t + [EOS])[:T] for t in TARGETS]


def kd_targets(case):
    return data_targets() if case == "data" else GENERATED


def mu_loss(torch, KDModel, student, teacher, case):
    """The reference KDModel.forward with the Mu student."""
    enc = torch.tensor([fit(s, E) for s in SOURCES])
    labels = [fit(t + [EOS], T) for t in TARGETS]
    dec = torch.tensor([[BOS] + l[:-1] for l in labels])
    kd_t = [fit(t[:T], T) for t in kd_targets(case)]
    kd_dec = torch.tensor([[BOS] + t[:-1] for t in kd_t])
    t_ids, t_mask = teacher_inputs(torch, kd_targets(case))
    kd = KDModel(student=student, teacher=teacher, tokenizer=None, alpha=ALPHA, encoder_seq_len=E, decoder_seq_len=T)
    kd._log_sample = lambda **kw: None
    o = kd(encoder_input_ids=enc, decoder_input_ids=dec, kd_teacher_input_ids=t_ids, kd_teacher_attention_mask=t_mask,
           kd_student_decoder_input_ids=kd_dec, targets=torch.tensor(labels))
    return o.loss, o.kd_loss, o.ce_loss


def decoder_only_loss(torch, student, teacher, case):
    """The same KDModel formula for the decoder-only student (rows source ‖ target[:-1], read from |source| − 1)."""
    import torch.nn.functional as F
    kd_t = [fit(t[:T], T) for t in kd_targets(case)]
    srcs = [s[:E] for s in SOURCES]
    rows = [s + t[:-1] for s, t in zip(srcs, kd_t)]
    width = max(len(r) for r in rows)
    logits = student(torch.tensor([fit(r, width) for r in rows]))                        # [B, W, Vs]
    s_logits = torch.stack([logits[b, len(s) - 1: len(s) - 1 + T] for b, s in enumerate(srcs)])   # [B, T, Vs]
    t_ids, t_mask = teacher_inputs(torch, kd_targets(case))
    with torch.no_grad():
        t_logits = teacher(input_ids=t_ids, attention_mask=t_mask).logits[:, E - 1: E - 1 + T, :]
    v = min(s_logits.size(-1), t_logits.size(-1))
    kd_loss = F.kl_div(F.log_softmax(s_logits[:, :, :v].reshape(-1, v), dim=-1),
                       F.log_softmax(t_logits[:, :, :v].reshape(-1, v), dim=-1), reduction="batchmean", log_target=True)
    # causal LM cross-entropy on source ‖ target + EOS, the loss on the target only (make_mu_decoder_grad_goldens)
    inputs, labs = [], []
    for s, t in zip(srcs, TARGETS):
        seq = s + (t + [EOS])[:T]
        inputs.append(seq[:-1])
        labs.append([seq[i + 1] if i + 1 >= len(s) else PAD for i in range(len(seq) - 1)])
    w = max(len(r) for r in inputs)
    ce_logits = student(torch.tensor([fit(r, w) for r in inputs]))
    ce_loss = F.cross_entropy(ce_logits.reshape(-1, ce_logits.size(-1)), torch.tensor([fit(r, w) for r in labs]).reshape(-1),
                              ignore_index=PAD)
    return ALPHA * kd_loss + (1 - ALPHA) * ce_loss, kd_loss, ce_loss


def teacher_slice(torch, teacher, case):
    t_ids, t_mask = teacher_inputs(torch, kd_targets(case))
    with torch.no_grad():
        return teacher(input_ids=t_ids, attention_mask=t_mask).logits[:, E - 1: E - 1 + T, :]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path, help="checkout of microsoft/encoder-decoder-slm")
    ap.add_argument("--out", type=Path, default=FIXTURES / "mu_grads")
    args = ap.parse_args()
    modeling_mu, mu_utils = mg.import_reference(args.reference.resolve())
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    torch.use_deterministic_algorithms(True)
    teacher = make_teacher(torch)           # before the peft stub below: transformers' loader probes for peft
    peft = types.ModuleType("peft")            # only the reference's teacher builder uses peft; KDModel does not
    peft.LoraConfig = peft.TaskType = peft.get_peft_model = None
    sys.modules.setdefault("peft", peft)
    from mu.train import get_optimizer, get_scheduler
    from mu.train_text2text_by_kd import KDModel

    def load_mu():
        cfg = json.loads((FIXTURES / "mu" / "gqa_mod" / "config.json").read_text())
        m = modeling_mu.Mu(modeling_mu.MuConfig(**{k: cfg[k] for k in mg.MU_FIELDS}), device="cpu")
        missing, unexpected = m.load_state_dict(load_file(str(FIXTURES / "mu" / "gqa_mod" / "model.safetensors")), strict=False)
        assert missing == ["lm_head.weight"] and not unexpected
        return m.eval()

    def load_decoder():
        cfg_json = json.loads((FIXTURES / "mu" / "mu_decoder" / "config.json").read_text())
        fields = {k: cfg_json[k] for k in mg.MU_FIELDS if k not in ("n_encoder_layer", "n_decoder_layer")}
        cfg = modeling_mu.MuConfig(**fields, n_encoder_layer=cfg_json["n_layer"], n_decoder_layer=0)
        m = mg.build_decoder_only(torch, mu_utils, cfg, cfg_json["n_layer"])
        m.load_state_dict(load_file(str(FIXTURES / "mu" / "mu_decoder" / "model.safetensors")), strict=True)
        return m.eval()

    students = {"mu": (load_mu, lambda s, c: mu_loss(torch, KDModel, s, teacher, c)),
                "mu_decoder": (load_decoder, lambda s, c: decoder_only_loss(torch, s, teacher, c))}
    tensors, meta = {}, dict(alpha=ALPHA, encoder_seq_len=E, decoder_seq_len=T, sources=SOURCES, targets=TARGETS,
                             generated=GENERATED, teacher_config=TEACHER_CONFIG, torch=torch.__version__,
                             transformers=transformers.__version__,
                             optimizer=dict(steps=STEPS, lr=LR, betas=[0.9, 0.98], eps=1e-8, weight_decay=WEIGHT_DECAY,
                                            warmup_steps=WARMUP, total_steps=STEPS, max_grad_norm=MAX_GRAD_NORM))
    for name, (load, loss_fn) in students.items():
        for case in ["data", "generated"]:
            student = load()
            loss, kd, ce = loss_fn(student, case)
            loss.backward()
            p = f"{name}.{case}."
            tensors.update({p + "loss": loss.detach().reshape(1), p + "kd_loss": kd.detach().reshape(1),
                            p + "ce_loss": ce.detach().reshape(1), p + "teacher_logits": teacher_slice(torch, teacher, case)})
            for n, prm in student.named_parameters():
                tensors[p + "grad." + n] = prm.grad.detach().clone()
            meta[f"{name}.{case}"] = dict(loss=loss.item(), kd_loss=kd.item(), ce_loss=ce.item(),
                                          teacher_input_ids=teacher_inputs(torch, kd_targets(case))[0].tolist(),
                                          teacher_attention_mask=teacher_inputs(torch, kd_targets(case))[1].tolist())
            print(name, case, "loss", loss.item(), "kd", kd.item(), "ce", ce.item())

        # ten steps of the reference recipe on the `data` case
        student = load()
        try:
            opt = get_optimizer(student, WEIGHT_DECAY, LR)
        except Exception as e:  # fused AdamW unavailable: the same algorithm unfused
            print("fused AdamW unavailable:", e)
            decay = [q for q in student.parameters() if q.dim() >= 2]
            nodecay = [q for q in student.parameters() if q.dim() < 2]
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": nodecay, "weight_decay": 0.0}],
                                    lr=LR, betas=(0.9, 0.98), eps=1e-8)
        sched = get_scheduler(opt, STEPS, WARMUP)
        rec = {k: [] for k in ["loss", "kd", "ce", "grad_norm", "lr"]}
        for _ in range(STEPS):
            opt.zero_grad(set_to_none=True)
            rec["lr"].append(opt.param_groups[0]["lr"])
            loss, kd, ce = loss_fn(student, "data")
            loss.backward()
            rec["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(student.parameters(), MAX_GRAD_NORM)))
            opt.step()
            sched.step()
            rec["loss"].append(loss.item()); rec["kd"].append(kd.item()); rec["ce"].append(ce.item())
        for k, v in rec.items():
            tensors[f"{name}.step_{k}"] = torch.tensor(v, dtype=torch.float32)
        for n, prm in student.named_parameters():
            tensors[f"{name}.after." + n] = prm.detach().clone()
        meta[f"{name}.steps"] = rec
        print(name, "steps: loss", [round(x, 4) for x in rec["loss"]])

    args.out.mkdir(parents=True, exist_ok=True)
    for name in students:                   # one file per student (each under 1 MB)
        path = args.out / f"kd_llama_{name}.safetensors"
        save_file({k: v.float().contiguous() for k, v in tensors.items() if k.startswith(name + ".")}, str(path))
        path.chmod(0o644)
    (args.out / "kd_llama.json").write_text(json.dumps(meta, indent=1) + "\n")
    (TEACHER_DIR / "README.md").write_text(
        "# Tiny random Llama teacher\n\nMade by `tools/goldens/make_kd_llama_goldens.py --reference /work/mu-ref` "
        f"(torch {torch.__version__}, transformers {transformers.__version__}): a Hugging Face `LlamaForCausalLM` "
        "(2 layers, d 32, 4 heads / 2 KV heads, SwiGLU 64, vocabulary 97, untied head), weights drawn with seed 97. "
        "The distillation goldens are `../mu_grads/kd_llama.*`. Do not edit by hand.\n")


if __name__ == "__main__":
    main()
