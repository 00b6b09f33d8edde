#!/usr/bin/env python3
"""Checks that the peers' checkpoints are the same model: greedy continuations of one prompt in every engine.

Runs each engine in its own process on the fp32 files that bench/peers/checkpoints.py wrote (and, for
comparison, the quantized ones) and prints the first --tokens greedy ids of each next to the Hugging Face
transformers fp32 reference, with the length of the common prefix. fp32 engines should agree on all of them
(random models have close logits, so an occasional late divergence is rounding, not a different model);
quantized files usually diverge earlier.

Usage:

    python3 bench/peers/check_same.py --checkpoints /tmp/encore-peers --models llama,t5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _driver import encore_binary, log  # noqa: E402

HF = """
import sys, json, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
path, ids, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
cfg = AutoConfig.from_pretrained(path)
ed = cfg.is_encoder_decoder
m = (AutoModelForSeq2SeqLM if ed else AutoModelForCausalLM).from_pretrained(path, dtype=torch.float32).eval()
m.generation_config.eos_token_id = None
out = m.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0,
                 **({"decoder_start_token_id": cfg.decoder_start_token_id} if ed else {}))[0].tolist()
print(json.dumps(out[1:] if ed else out[len(ids):]))
"""
CT2 = """
import sys, json, ctranslate2
from pathlib import Path
path, ids, n, ct = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
p = Path(path)
ed = (p / "shared_vocabulary.json").is_file()
vocab = json.loads((p / ("shared_vocabulary.json" if ed else "vocabulary.json")).read_text())
toks = [vocab[i] for i in ids]
if ed:
    r = ctranslate2.Translator(path, compute_type=ct).translate_batch([toks], beam_size=1, max_decoding_length=n,
                                                                       min_decoding_length=n)
    out = r[0].hypotheses[0]
else:
    r = ctranslate2.Generator(path, compute_type=ct).generate_batch([toks], max_length=n, min_length=n,
                                                                      sampling_topk=1, include_prompt_in_result=False)
    out = r[0].sequences[0]
index = {t: i for i, t in enumerate(vocab)}
print(json.dumps([index[t] for t in out]))
"""
LLAMACPP = """
import sys, json
import numpy as np
import llama_cpp as L
path, ids, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
L.llama_backend_init()
model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
cp = L.llama_context_default_params()
cp.n_ctx = cp.n_batch = cp.n_ubatch = 256
cp.type_k = cp.type_v = 0   # f32 KV cache for the comparison
ctx = L.llama_init_from_model(model, cp)
V = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
b = L.llama_batch_init(256, 0, 1)
def fill(toks, p0):
    b.n_tokens = len(toks)
    for i, t in enumerate(toks):
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, p0 + i, 1, i == len(toks) - 1
        b.seq_id[i][0] = 0
def step(toks, p0):
    fill(toks, p0); assert L.llama_decode(ctx, b) == 0
    return int(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(V,)).argmax())
if L.llama_model_has_encoder(model):
    fill(ids, 0); assert L.llama_encode(ctx, b) == 0
    tok, pos = step([L.llama_model_decoder_start_token(model)], 0), 1
else:
    tok, pos = step(ids, 0), len(ids)
out = [tok]
while len(out) < n:
    tok = step([tok], pos); pos += 1; out.append(tok)
print(json.dumps(out))
"""


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
        return None, (lines[-1] if lines else f"exit {p.returncode}")[:150]
    try:
        return json.loads(p.stdout.strip().splitlines()[-1]), None
    except (json.JSONDecodeError, IndexError):
        return None, "no ids printed"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=Path, default=Path("/tmp/encore-peers"))
    ap.add_argument("--models", default="llama,t5")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--encore", help="Encore binary (default $ENCORE_BIN or .build/release/encore)")
    ap.add_argument("--python", default="/work/venv/bin/python")
    ap.add_argument("--llama-python", default="/work/venv-llama/bin/python")
    args = ap.parse_args()
    enc = encore_binary(args.encore)
    ck, n = args.checkpoints, args.tokens
    prompt = [(i * 7919 + 13) % 900 + 3 for i in range(24)]   # fixed ids < 903: valid in every vocabulary here
    P = json.dumps(prompt)
    ok = True
    for m in [x for x in args.models.split(",") if x]:
        ref, err = run([args.python, "-c", HF, str(ck / f"{m}-hf"), P, str(n)])
        if err:
            log(f"{m}: transformers failed: {err}")
            return 1
        print(f"\n{m}: prompt of {len(prompt)} ids; transformers fp32: {ref}")
        rows = [("encore (HF folder)", [enc, "generate", "--model", str(ck / f"{m}-hf"), "--input-ids",
                                        ",".join(map(str, prompt)), "--max-tokens", str(n), "--json"]),
                ("encore (f32 GGUF)", [enc, "generate", "--model", str(ck / f"{m}-f32.gguf"), "--input-ids",
                                       ",".join(map(str, prompt)), "--max-tokens", str(n), "--json"]),
                ("ct2 float32", [args.python, "-c", CT2, str(ck / f"{m}-ct2"), P, str(n), "float32"]),
                ("ct2 int8", [args.python, "-c", CT2, str(ck / f"{m}-ct2-int8"), P, str(n), "int8"])]
        rows += [(f"llama.cpp {q}", [args.llama_python, "-c", LLAMACPP, str(ck / f"{m}-{q}.gguf"), P, str(n)])
                 for q in ("f32", "bf16", "q8_0", "q4_0")]
        for name, cmd in rows:
            ids, err = run(cmd)
            if isinstance(ids, dict):
                ids = ids.get("ids")
            if err:
                print(f"  {name:<20} n/a: {err}")
                continue
            same = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
            print(f"  {name:<20} agrees on the first {same:>2} of {len(ref)} tokens  {ids}")
            if name in ("encore (HF folder)", "encore (f32 GGUF)", "ct2 float32", "llama.cpp f32") and same < 4:
                ok = False
    if not ok:
        print("\nan fp32 engine disagrees with transformers within 4 tokens: the checkpoints are not the same model")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
