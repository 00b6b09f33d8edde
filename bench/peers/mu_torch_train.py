#!/usr/bin/env python3
"""PyTorch peer of ``encore bench-train``: Mu training speed (forward + backward + clip + AdamW step), fp32, CPU.

The model is the reference ``Mu`` itself (``mu.models.modeling_mu`` from ``--reference``, its own initialisation,
eval mode so dropout is off, as in ``encore bench-train``), in fp32 (the reference trainer casts to bf16; Encore
trains in fp32). Random ids without padding: ``--batch-size`` rows of ``--encoder-seq-len`` source and
``--decoder-seq-len`` decoder positions; ``loss = Mu.forward(enc, dec, targets).loss``; ``clip_grad_norm_(1.0)``;
``torch.optim.AdamW`` (lr 1e-4, betas 0.9/0.98, decay 0.01 on >= 2-D parameters). One warm-up step, then
``--steps`` timed steps; tokens/s = batch * (encoder + decoder length) / median step time.

    /work/venv/bin/python bench/peers/mu_torch_train.py --reference /work/mu-ref \\
        --config bench/configs/mu-train-small.json --batch-size 4 --encoder-seq-len 128 --decoder-seq-len 32 --threads 2
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

MU_FIELDS = ["n_encoder_layer", "n_decoder_layer", "n_embd", "qkv_embd", "is_interleaved", "hidden_dim", "n_head",
             "n_kv_head", "block_size", "dropout", "rope_theta", "rope_factor", "pad_token_id", "vocab_size"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path, help="checkout of microsoft/encoder-decoder-slm")
    ap.add_argument("--config", type=Path, help="config.json with the MuConfig fields (default: the reference defaults, Mu-330M)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--encoder-seq-len", type=int, default=128)
    ap.add_argument("--decoder-seq-len", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(a.reference.resolve() / "src"))
    import torch
    from mu.models.modeling_mu import Mu, MuConfig

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = MuConfig(**{k: v for k, v in json.loads(a.config.read_text()).items() if k in MU_FIELDS}) if a.config else MuConfig()
    model = Mu(cfg, device="cpu").float()
    model.eval()  # dropout off, as encore bench-train
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.01},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.98), eps=1e-8)
    B, L, T, V = a.batch_size, a.encoder_seq_len, a.decoder_seq_len, cfg.vocab_size
    enc = torch.randint(3, V, (B, L))
    dec = torch.randint(3, V, (B, T))
    dec[:, 0] = 1
    tgt = torch.randint(3, V, (B, T))
    times, loss = [], None
    for i in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(encoder_input_ids=enc, decoder_input_ids=dec, targets=tgt).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    n_params = sum(p.numel() for p in params)
    tokens = B * (L + T)
    if a.json:
        print(json.dumps(dict(system="pytorch", torch=torch.__version__, params=n_params, batch_size=B, encoder_seq_len=L,
                              decoder_seq_len=T, threads=a.threads, median_step_s=med, tokens_per_s=tokens / med,
                              steps=times, loss=loss.item())))
    else:
        print(f"pytorch {torch.__version__}: {n_params} params, batch {B} × ({L} + {T}) tokens, {a.threads} threads: "
              f"median step {med:.3f} s, {tokens / med:.1f} tokens/s")


if __name__ == "__main__":
    main()
