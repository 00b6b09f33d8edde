#!/usr/bin/env python3
"""Distillation data goldens: the reference ``KDDataset.__getitem__`` (mu.train_text2text_by_kd) on text.

Runs the reference dataset classes with the reference tokenizer setup (``mu.tokenizer.get_tokenizer``: its
padding side, BOS id 1 and pad = unk overrides) applied to the Phi-3.5-mini tokenizer files committed in
``Tests/EncoreTokenizersTests/Fixtures/phi-3.5-mini`` (the hub name is redirected to that folder), and a stub
student whose ``generate`` returns fixed ids (including one id equal to and one above ``len(tokenizer)``, to
pin the reference's ``>`` unk mapping). Writes ``Tests/EncoreTests/Fixtures/mu_grads/kd_data.json``: per
example the texts, the stub's generated ids (BOS removed) and every field of the reference item
(encoder_input_ids, decoder_input_ids, targets, kd_teacher_input_ids, kd_student_decoder_input_ids).

Usage (from the repository root):

    /work/venv/bin/python tools/goldens/make_kd_data_goldens.py --reference /work/mu-ref
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = REPO_ROOT / "Tests" / "EncoreTokenizersTests" / "Fixtures" / "phi-3.5-mini"
OUT = REPO_ROOT / "Tests" / "EncoreTests" / "Fixtures" / "mu_grads" / "kd_data.json"
ENC_LEN, DEC_LEN = 16, 8

EXAMPLES = [
    dict(source="What is the capital of France?", target="Paris."),
    dict(source="Answer the following question based only on the context. ###Question Who wrote Hamlet? "
                "###Context Hamlet is a tragedy written by William Shakespeare.",          # longer than ENC_LEN
         target="William Shakespeare, the English playwright and poet."),                  # longer than DEC_LEN
    dict(source="Ünïcödé — naïve café ☕", target="ok"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.reference).resolve() / "src"))
    peft = types.ModuleType("peft")
    peft.LoraConfig = peft.TaskType = peft.get_peft_model = None
    sys.modules.setdefault("peft", peft)
    import torch
    import transformers
    import mu.tokenizer as mt
    from mu.train_text2text_by_kd import KDDataset

    real = transformers.AutoTokenizer
    mt.AutoTokenizer = types.SimpleNamespace(from_pretrained=lambda name, **kw: real.from_pretrained(str(TOKENIZER), **kw))
    tok = mt.get_tokenizer()
    n = len(tok)

    class StubStudent:
        """generate() returns [BOS] + fixed ids (the reference strips the BOS)."""
        def __init__(self):
            self.i = 0

        def generate(self, input_ids, max_new_tokens, temperature, top_k, eos_token_id, bos_token_id):
            fixed = [[306, n, 29889, eos_token_id], [n + 5, 450, 1234, 263, 29871, 29906, 29941, 29945],
                     [3421, eos_token_id]][self.i % 3]
            self.i += 1
            assert len(fixed) <= max_new_tokens
            return torch.tensor([[bos_token_id] + fixed])

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.jsonl"
        path.write_text("\n".join(json.dumps(e) for e in EXAMPLES))
        student = StubStudent()
        ds = KDDataset(model=student, data_path=path, tokenizer=tok, encoder_seq_len=ENC_LEN, decoder_seq_len=DEC_LEN)
        import mu.train_text2text_by_kd as kd
        kd.get_distributed_context = lambda: types.SimpleNamespace(device="cpu")
        out = []
        for i, e in enumerate(EXAMPLES):
            student.i = i
            item = ds[i]
            student.i = i
            generated = student.generate(torch.tensor([[0]]), DEC_LEN, 0.9, 128, tok.eos_token_id, tok.bos_token_id)[0, 1:].tolist()
            out.append(dict(source=e["source"], target=e["target"], generated=generated,
                            **{k: v.tolist() for k, v in item.items() if not k.endswith("attention_mask")}))
    meta = dict(encoder_seq_len=ENC_LEN, decoder_seq_len=DEC_LEN, tokenizer_size=n, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, unk_token_id=tok.unk_token_id,
                transformers=transformers.__version__, examples=out)
    OUT.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print("tokenizer size", n, "bos", tok.bos_token_id, "eos", tok.eos_token_id, "pad", tok.pad_token_id)
    for o in out:
        print(o["encoder_input_ids"], o["targets"], o["kd_teacher_input_ids"])


if __name__ == "__main__":
    main()
