#!/usr/bin/env python3
"""Training goldens for Encore (issue 6), computed by the reference PyTorch code.

For the Mu fixtures ``gqa_mod`` (GQA, h mod n_kv) and ``gqa_interleaved_ntk`` (GQA, h // groups, NTK RoPE)
from ``Tests/EncoreTests/Fixtures/mu/<case>/`` (weights + input ids made by make_mu_goldens.py), builds the
reference ``Mu`` (``mu.models.modeling_mu``), loads the weights (lm_head tied to wte), and in eval mode
(dropout off) writes into ``OUT/<case>.safetensors`` (F32):

    loss                    [1]  Mu.forward(enc, dec, targets).loss = F.cross_entropy(..., ignore_index=pad)
    grad.<name>                  d loss / d parameter, for every named parameter (wte gets embedding + head)
    step_loss, step_grad_norm, step_lr   [STEPS]  per optimizer step
    after.<name>                 every parameter after STEPS training steps of the reference recipe:
                                 zero_grad, loss.backward, clip_grad_norm_(1.0), AdamW.step, scheduler.step,
                                 with the reference's own ``mu.train.get_optimizer`` (AdamW betas (0.9, 0.98),
                                 decay only on >= 2-D parameters) and ``mu.train.get_scheduler`` (linear warmup,
                                 cosine to 0), on the same batch every step

and ``OUT/<case>.json`` with the ids, the targets and the optimizer settings. Targets are the decoder inputs
shifted left by one, with EOS (2) at the first position whose next input is padding (or the last one),
padding after it.

``OUT/adamw.safetensors``: the optimizer alone (``get_optimizer`` + ``get_scheduler`` + ``clip_grad_norm_``) on a
2-D, a bias and a norm parameter with given random gradients for 5 steps: init.*, grad<s>.*, after<s>.*, grad_norm.

``OUT/kd.safetensors`` / ``kd.json``: the reference ``KDModel.forward`` (from ``mu.train_text2text_by_kd``; its
peft import is stubbed, the teacher and the student are stubs returning fixed random logits, the student's
loss is Mu.forward's cross-entropy) on small random tensors, in two cases (student vocabulary larger /
smaller than the teacher's): loss, kd_loss, ce_loss and the gradients with respect to both student logits.

``OUT/trainer.safetensors`` / ``trainer.json``: the reference ``mu.train.Trainer`` itself (gradient accumulation
2, 3 optimizer steps) on the mha fixture with dropout p = 0 and fixed micro-batches: per-step metrics, parameters after.

``OUT/kd_mu.safetensors`` / ``kd_mu.json``: the same ``KDModel.forward`` with the real ``gqa_mod`` Mu as the
student (eval mode) and a stub teacher of random logits (vocabulary 97 < 101): the losses and every student
parameter's gradient.

Usage (from the repository root):

    /work/venv/bin/python tools/goldens/make_mu_grad_goldens.py --reference /work/mu-ref
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import types
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "Tests" / "EncoreTests" / "Fixtures"
DEFAULT_OUT = FIXTURES / "mu_grads"
CASES = ["gqa_mod", "gqa_interleaved_ntk"]
PAD, BOS, EOS = 0, 1, 2
MU_FIELDS = ["n_encoder_layer", "n_decoder_layer", "n_embd", "qkv_embd", "is_interleaved", "hidden_dim",
             "n_head", "n_kv_head", "block_size", "dropout", "rope_theta", "rope_factor", "pad_token_id",
             "vocab_size"]
# Optimizer recipe: the reference's, with a learning rate large enough to move these weights visibly.
STEPS, LR, WEIGHT_DECAY, WARMUP, TOTAL, MAX_GRAD_NORM = 4, 1e-2, 0.01, 2, 6, 1.0


def targets_for(dec):
    out = []
    for row in dec:
        t = [PAD] * len(row)
        for i in range(len(row)):
            nxt = row[i + 1] if i + 1 < len(row) else PAD
            if nxt != PAD:
                t[i] = nxt
            else:
                t[i] = EOS
                break
        out.append(t)
    return out


def load_model(torch, Mu, MuConfig, case):
    from safetensors.torch import load_file
    cfg = json.loads((FIXTURES / "mu" / case / "config.json").read_text())
    model = Mu(MuConfig(**{k: cfg[k] for k in MU_FIELDS}), device="cpu")
    sd = load_file(str(FIXTURES / "mu" / case / "model.safetensors"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected, (missing, unexpected)
    assert model.lm_head.weight is model.transformer.wte.weight
    model.eval()  # dropout off
    return model


def mu_case(torch, Mu, MuConfig, get_optimizer, get_scheduler, case, out):
    from safetensors.torch import save_file
    golden = json.loads((FIXTURES / "mu" / case / "golden.json").read_text())
    enc_ids, dec_ids = golden["encoder_input_ids"], golden["decoder_input_ids"]
    targets = targets_for(dec_ids)
    enc, dec, tgt = (torch.tensor(x) for x in (enc_ids, dec_ids, targets))
    tensors = {}

    model = load_model(torch, Mu, MuConfig, case)
    loss = model(encoder_input_ids=enc, decoder_input_ids=dec, targets=tgt).loss
    loss.backward()
    tensors["loss"] = loss.detach().reshape(1)
    for n, p in model.named_parameters():
        tensors["grad." + n] = p.grad.detach().clone()

    model = load_model(torch, Mu, MuConfig, case)
    try:
        opt = get_optimizer(model, WEIGHT_DECAY, LR)  # the reference's call: fused=True
        fused = True
    except Exception as e:  # fused AdamW unavailable on this build: the same algorithm unfused
        print("fused AdamW unavailable:", e)
        fused = False
        import mu.train as mt
        decay = [p for p in model.parameters() if p.dim() >= 2]
        nodecay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                 {"params": nodecay, "weight_decay": 0.0}], lr=LR, betas=(0.9, 0.98))
    sched = get_scheduler(opt, TOTAL, WARMUP)
    losses, norms, lrs = [], [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        lrs.append(opt.param_groups[0]["lr"])
        l = model(encoder_input_ids=enc, decoder_input_ids=dec, targets=tgt).loss
        l.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)))
        opt.step()
        sched.step()
        losses.append(l.item())
    tensors["step_loss"] = torch.tensor(losses, dtype=torch.float32)
    tensors["step_grad_norm"] = torch.tensor(norms, dtype=torch.float32)
    tensors["step_lr"] = torch.tensor(lrs, dtype=torch.float32)
    for n, p in model.named_parameters():
        tensors["after." + n] = p.detach().clone()

    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out / f"{case}.safetensors"))
    meta = dict(case=case, encoder_input_ids=enc_ids, decoder_input_ids=dec_ids, targets=targets,
                loss=float(loss), optimizer=dict(steps=STEPS, lr=LR, betas=[0.9, 0.98], eps=1e-8,
                weight_decay=WEIGHT_DECAY, warmup_steps=WARMUP, total_steps=TOTAL, max_grad_norm=MAX_GRAD_NORM,
                fused=fused), step_loss=losses, step_grad_norm=norms, step_lr=lrs)
    (out / f"{case}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(case, "loss", float(loss), "steps", losses, "norms", norms, "lrs", lrs)


def optimizer_case(torch, get_optimizer, get_scheduler, out):
    """AdamW + clip + schedule alone, on given gradients (no model noise): exact to fp32 rounding."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(77)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(5, 7, generator=g))
            self.b = torch.nn.Parameter(torch.randn(7, generator=g) * 0.1)
            self.n = torch.nn.Parameter(1 + torch.randn(3, generator=g) * 0.1)
    m = M()
    tensors = {f"init.{k}": v.detach().clone() for k, v in m.named_parameters()}
    opt = get_optimizer(m, WEIGHT_DECAY, LR)
    sched = get_scheduler(opt, TOTAL, WARMUP)
    scales = [0.5, 0.05, 0.3, 0.02, 0.4]   # total norm above and below the clip threshold 1.0
    norms = []
    for s, sc in enumerate(scales):
        for k, p in m.named_parameters():
            p.grad = torch.randn(p.shape, generator=g) * sc
            tensors[f"grad{s}.{k}"] = p.grad.clone()
        norms.append(float(torch.nn.utils.clip_grad_norm_(m.parameters(), MAX_GRAD_NORM)))
        opt.step()
        sched.step()
        for k, p in m.named_parameters():
            tensors[f"after{s}.{k}"] = p.detach().clone()
    tensors["grad_norm"] = torch.tensor(norms)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out / "adamw.safetensors"))
    print("adamw norms", norms)


def kd_cases(torch, KDModel, out):
    import torch.nn.functional as F
    from safetensors.torch import save_file
    nn = torch.nn

    class Student(nn.Module):
        """Returns fixed logits per decoder input; its loss is Mu.forward's cross-entropy."""
        def __init__(self, table):
            super().__init__()
            self.table = table

        def forward(self, encoder_input_ids, decoder_input_ids, targets=None, **kw):
            logits = next(l for ids, l in self.table if torch.equal(ids, decoder_input_ids))
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=PAD)
            return SimpleNamespace(logits=logits, loss=loss)

    class Teacher(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, input_ids, attention_mask):
            return SimpleNamespace(logits=self.logits)

    g = torch.Generator().manual_seed(606)
    tensors, meta = {}, {}
    for name, B, enc_len, T, vs, vt, alpha in [("kd_a", 2, 5, 4, 13, 11, 0.9), ("kd_b", 3, 3, 5, 9, 12, 0.25)]:
        kd_dec = torch.randint(3, min(vs, vt), (B, T), generator=g)
        kd_dec[:, 0] = BOS
        ce_dec = kd_dec.clone()
        ce_dec[:, 1] = (ce_dec[:, 1] + 1) % min(vs, vt)   # a different decoder input for the CE pass
        ce_dec[:, 1][ce_dec[:, 1] < 3] = 3
        targets = torch.randint(3, vs, (B, T), generator=g)
        targets[0, T - 2:] = PAD                           # padded targets are ignored by the CE
        s_kd = (torch.randn(B, T, vs, generator=g) * 2).requires_grad_()
        s_ce = (torch.randn(B, T, vs, generator=g) * 2).requires_grad_()
        teacher = torch.randn(B, enc_len + T, vt, generator=g) * 2
        kd = KDModel(student=Student([(kd_dec, s_kd), (ce_dec, s_ce)]), teacher=Teacher(teacher), tokenizer=None,
                     alpha=alpha, encoder_seq_len=enc_len, decoder_seq_len=T)
        kd._log_sample = lambda **kw: None   # it samples 1% of batches for decoding with the tokenizer
        enc = torch.randint(3, vs, (B, enc_len), generator=g)
        o = kd(encoder_input_ids=enc, decoder_input_ids=ce_dec, kd_teacher_input_ids=torch.zeros(B, enc_len + T, dtype=torch.long),
               kd_teacher_attention_mask=torch.ones(B, enc_len + T, dtype=torch.long), kd_student_decoder_input_ids=kd_dec,
               targets=targets)
        o.loss.backward()
        tensors.update({f"{name}.student_kd": s_kd.detach(), f"{name}.student_ce": s_ce.detach(),
                        f"{name}.teacher": teacher, f"{name}.loss": o.loss.detach().reshape(1),
                        f"{name}.kd_loss": o.kd_loss.detach().reshape(1), f"{name}.ce_loss": o.ce_loss.detach().reshape(1),
                        f"{name}.grad_student_kd": s_kd.grad, f"{name}.grad_student_ce": s_ce.grad})
        meta[name] = dict(alpha=alpha, encoder_seq_len=enc_len, decoder_seq_len=T, targets=targets.tolist(),
                          loss=float(o.loss), kd_loss=float(o.kd_loss), ce_loss=float(o.ce_loss))
        print(name, meta[name]["loss"], meta[name]["kd_loss"], meta[name]["ce_loss"])
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out / "kd.safetensors"))
    (out / "kd.json").write_text(json.dumps(meta, indent=1) + "\n")


def kd_mu_case(torch, Mu, MuConfig, KDModel, out):
    """KDModel.forward with the real Mu student (gqa_mod weights) and a stub teacher of fixed random logits."""
    from safetensors.torch import save_file
    golden = json.loads((FIXTURES / "mu" / "gqa_mod" / "golden.json").read_text())
    enc_ids, dec_ids = golden["encoder_input_ids"], golden["decoder_input_ids"]
    targets = targets_for(dec_ids)
    B, L, T = len(enc_ids), len(enc_ids[0]), len(dec_ids[0])
    g = torch.Generator().manual_seed(909)
    kd_dec = torch.randint(3, 101, (B, T), generator=g)
    kd_dec[:, 0] = BOS
    kd_dec[1, T - 2:] = PAD                                  # a generated target shorter than decoder_seq_len
    teacher = torch.randn(B, L + T, 97, generator=g) * 3     # Vt = 97 < Vs = 101: the student is cut to 97

    class Teacher(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return SimpleNamespace(logits=teacher)

    student = load_model(torch, Mu, MuConfig, "gqa_mod")
    kd = KDModel(student=student, teacher=Teacher(), tokenizer=None, alpha=0.9, encoder_seq_len=L, decoder_seq_len=T)
    kd._log_sample = lambda **kw: None
    o = kd(encoder_input_ids=torch.tensor(enc_ids), decoder_input_ids=torch.tensor(dec_ids),
           kd_teacher_input_ids=torch.zeros(B, L + T, dtype=torch.long),
           kd_teacher_attention_mask=torch.ones(B, L + T, dtype=torch.long),
           kd_student_decoder_input_ids=kd_dec, targets=torch.tensor(targets))
    o.loss.backward()
    tensors = {"teacher": teacher, "loss": o.loss.detach().reshape(1), "kd_loss": o.kd_loss.detach().reshape(1),
               "ce_loss": o.ce_loss.detach().reshape(1)}
    for n, p in student.named_parameters():
        tensors["grad." + n] = p.grad.detach().clone()
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out / "kd_mu.safetensors"))
    meta = dict(case="gqa_mod", alpha=0.9, encoder_seq_len=L, encoder_input_ids=enc_ids, decoder_input_ids=dec_ids,
                targets=targets, kd_decoder_input_ids=kd_dec.tolist(), loss=o.loss.item(), kd_loss=o.kd_loss.item(),
                ce_loss=o.ce_loss.item())
    (out / "kd_mu.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("kd_mu", meta["loss"], meta["kd_loss"], meta["ce_loss"])


TRAINER_EXAMPLES = [([5, 6, 7, 8, 9], [20, 21, 22]), ([10, 11, 12], [23, 24, 25, 26, 27, 28]),
                    ([13, 14, 15, 16, 17, 18, 19, 30, 31], [29]), ([32, 33], [34, 35])]
TRAINER = dict(encoder_seq_len=8, decoder_seq_len=5, batch_size=2, global_batch_size=4, epochs=3, learning_rate=1e-2,
               warmup_steps=1, max_grad_norm=1.0, weight_decay=0.01)


def trainer_case(torch, Mu, MuConfig, out):
    """The reference ``mu.train.Trainer`` (gradient accumulation 2, clip, AdamW, schedule) on mha, dropout p=0,
    micro-batches in a fixed order; batches built as Seq2SeqDataset does (labels = target + EOS, truncated and
    right-padded; decoder input = [BOS] + labels[:-1])."""
    from safetensors.torch import save_file
    import mu.train as mt
    torch.cuda.synchronize = lambda *a, **k: None          # the reference times steps with CUDA syncs
    model = load_model(torch, Mu, MuConfig, "mha")
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    c = TRAINER
    def fit(ids, n):
        return ids[:n] + [PAD] * max(0, n - len(ids))
    def batch(examples):
        enc = [fit(s, c["encoder_seq_len"]) for s, _ in examples]
        labels = [fit(t + [EOS], c["decoder_seq_len"]) for _, t in examples]
        dec = [[BOS] + l[:-1] for l in labels]
        return dict(encoder_input_ids=torch.tensor(enc), decoder_input_ids=torch.tensor(dec), targets=torch.tensor(labels))
    batches = [TRAINER_EXAMPLES[0:2], TRAINER_EXAMPLES[2:4]]
    data_steps = len(batches) * c["epochs"]
    trainer = mt.Trainer(model, data_steps=data_steps, batch_size=c["batch_size"], global_batch_size=c["global_batch_size"],
                         max_grad_norm=c["max_grad_norm"], weight_decay=c["weight_decay"], learning_rate=c["learning_rate"],
                         warmup_steps=c["warmup_steps"])
    metrics = []
    for epoch in range(c["epochs"]):
        for b in batches:
            _, m = trainer.step(batch(b))
            if m is not None:
                metrics.append(dict(loss=m["global_batch_loss"], grad_norm=m["grad_norm"], lr=m["lr"]))
    tensors = {"after." + n: p.detach().clone() for n, p in model.named_parameters()}
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(out / "trainer.safetensors"))
    meta = dict(TRAINER, case="mha", examples=[dict(source=s, target=t) for s, t in TRAINER_EXAMPLES],
                micro_batches=[[0, 1], [2, 3]], steps=metrics)
    (out / "trainer.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("trainer", metrics)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="checkout of microsoft/encoder-decoder-slm")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    ref = Path(args.reference).resolve()
    sys.path.insert(0, str(ref / "src"))
    peft = types.ModuleType("peft")            # only the teacher builder uses peft; KDModel does not
    peft.LoraConfig = peft.TaskType = peft.get_peft_model = None
    sys.modules.setdefault("peft", peft)
    import torch
    import safetensors
    from mu.models.modeling_mu import Mu, MuConfig
    from mu.train import get_optimizer, get_scheduler
    from mu.train_text2text_by_kd import KDModel

    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        mu_case(torch, Mu, MuConfig, get_optimizer, get_scheduler, case, out)
    optimizer_case(torch, get_optimizer, get_scheduler, out)
    kd_cases(torch, KDModel, out)
    kd_mu_case(torch, Mu, MuConfig, KDModel, out)
    trainer_case(torch, Mu, MuConfig, out)

    def sha(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()
    files = {p: sha(ref / "src" / "mu" / p) for p in ["models/modeling_mu.py", "models/mu_utils.py", "train.py",
                                                    "train_text2text_by_kd.py"]}
    lines = ["# Mu training goldens", "", "Made by `tools/goldens/make_mu_grad_goldens.py` (see its docstring) from the",
             "reference PyTorch code of microsoft/encoder-decoder-slm. Do not edit by hand; rerun:", "", "```sh",
             "/work/venv/bin/python tools/goldens/make_mu_grad_goldens.py --reference /work/mu-ref", "```", "",
             f"- python {platform.python_version()}, torch {torch.__version__}, safetensors {safetensors.__version__}"]
    lines += [f"- `{p}` sha256 `{h}`" for p, h in files.items()]
    lines += ["", "Files: `<case>.safetensors` + `<case>.json` for the Mu cases (loss, gradients, parameters after "
              f"{STEPS} AdamW steps), `adamw.safetensors` (the optimizer alone on given gradients), `kd.safetensors` + `kd.json` for the distillation loss, `kd_mu.*` for it through the gqa_mod Mu, `trainer.*` for the reference Trainer loop.",
              "", "`kd_data.json` is made by `tools/goldens/make_kd_data_goldens.py --reference /work/mu-ref` (the reference",
              "KDDataset items on text with the Phi-3.5 tokenizer).", "",
              "`kd_llama.json` + `kd_llama_<student>.safetensors` (and the teacher `../tiny_llama_teacher/`) are made by",
              "`tools/goldens/make_kd_llama_goldens.py --reference /work/mu-ref`: KD from a tiny random Hugging Face Llama into",
              "gqa_mod and mu_decoder (losses, every gradient, ten AdamW steps with warmup + cosine).", ""]
    (out / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
