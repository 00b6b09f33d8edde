#!/usr/bin/env python3
"""Continue an Encore-trained Mu in the reference PyTorch trainer (microsoft/encoder-decoder-slm).

Loads ``model.pt`` (made from an Encore model folder by ``tools/convert_mu.py to-pt``) into the reference
``mu.models.modeling_mu.Mu`` with ``load_state_dict(strict=True)``, reads text JSONL with the reference's own
``Seq2SeqDataset`` (train_text2text_by_kd.py) and a ``PreTrainedTokenizerFast`` built from the model folder's
``tokenizer.json`` (pad = unk, BOS 1, right padding: the reference's ``get_tokenizer`` settings, without the hub),
prints the reference ``LossEvaluator``-style validation loss, runs ``--steps`` optimizer steps of the reference
``mu.train.Trainer`` (AdamW 0.9/0.98, decay on matrices, warmup + cosine, clip 1.0) on the training data, prints the
validation loss again, and saves the continued checkpoint (``torch.save`` in the reference's format).

Usage:

    python3 tools/convert_mu.py to-pt runs/debian runs/debian.pt
    /work/venv/bin/python tools/continue_in_pytorch.py --reference /work/mu-ref --model-pt runs/debian.pt \\
        --tokenizer runs/debian/tokenizer.json --eos-token '<|endoftext|>' --train data/debian/train.jsonl \\
        --val data/debian/val.jsonl --steps 20 --out runs/debian-continued.pt
"""

import argparse
import sys
import types
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path)
    ap.add_argument("--model-pt", required=True, type=Path)
    ap.add_argument("--tokenizer", required=True, type=Path, help="tokenizer.json")
    ap.add_argument("--eos-token", default="<|endoftext|>")
    ap.add_argument("--train", required=True, type=Path)
    ap.add_argument("--val", required=True, type=Path)
    ap.add_argument("--val-examples", type=int, default=64)
    ap.add_argument("--encoder-seq-len", type=int, default=128)
    ap.add_argument("--decoder-seq-len", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    sys.path.insert(0, str(a.reference.resolve() / "src"))
    peft = types.ModuleType("peft")              # only the reference's teacher builder uses peft
    peft.LoraConfig = peft.TaskType = peft.get_peft_model = None
    sys.modules.setdefault("peft", peft)
    import itertools
    import tempfile
    import torch
    from transformers import PreTrainedTokenizerFast
    from mu.models.modeling_mu import Mu, MuConfig
    from mu.train import Trainer
    from mu.train_text2text_by_kd import Seq2SeqDataset

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    torch.cuda.synchronize = lambda *x, **k: None            # the reference times steps with CUDA syncs
    ckpt = torch.load(a.model_pt, map_location="cpu", weights_only=True)
    model = Mu(MuConfig(**ckpt["model_config"]), device="cpu")
    model.load_state_dict(ckpt["model_state_dict"], strict=True)
    print(f"loaded {a.model_pt} into the reference Mu with strict=True: "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")

    tok = PreTrainedTokenizerFast(tokenizer_file=str(a.tokenizer), unk_token="<unk>", pad_token="<unk>",
                                  bos_token="<s>", eos_token=a.eos_token)
    tok.padding_side = "right"
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl") as vf:
        vf.write("".join(itertools.islice(a.val.open(), a.val_examples)))
        vf.flush()
        val = Seq2SeqDataset(Path(vf.name), tok, a.encoder_seq_len, a.decoder_seq_len)
        val_batches = list(torch.utils.data.DataLoader(val, batch_size=a.batch_size, shuffle=False))

    def val_loss():
        model.eval()
        with torch.no_grad():
            losses = [model(encoder_input_ids=b["encoder_input_ids"], decoder_input_ids=b["decoder_input_ids"],
                            targets=b["targets"]).loss.item() for b in val_batches]
        model.train()
        return sum(losses) / len(losses)

    before = val_loss()
    print(f"validation loss ({len(val)} examples, reference padding to {a.encoder_seq_len}/{a.decoder_seq_len}): {before:.4f}")
    train = Seq2SeqDataset(a.train, tok, a.encoder_seq_len, a.decoder_seq_len)
    loader = torch.utils.data.DataLoader(train, batch_size=a.batch_size, shuffle=True, drop_last=True)
    trainer = Trainer(model, data_steps=a.steps, batch_size=a.batch_size, global_batch_size=a.batch_size, max_grad_norm=1.0,
                      weight_decay=0.01, learning_rate=a.lr, warmup_steps=min(4, a.steps - 1))
    model.train()
    for step, batch in zip(range(a.steps), loader):
        _, m = trainer.step(batch)
        if m is not None and (step % 5 == 0 or step == a.steps - 1):
            print(f"reference Trainer step {step}: loss {m['global_batch_loss']:.4f}, lr {m['lr']:.2e}")
    after = val_loss()
    print(f"validation loss after {a.steps} reference steps: {after:.4f} (was {before:.4f})")
    if a.out:
        torch.save({"model_state_dict": model.state_dict(), "model_config": ckpt["model_config"]}, a.out)
        print(f"saved {a.out}")


if __name__ == "__main__":
    main()
