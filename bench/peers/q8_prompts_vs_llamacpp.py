#!/usr/bin/env python3
"""Encore's prompt passes on a q8_0 GGUF against llama.cpp's log-probabilities on the same file and tokens.

Scores a fixed English text teacher-forced (`encore score --keep-quantized`, the first 10 tokens as input, the rest as
targets) with fp32 prompt passes (the blocks widened, BLAS sgemm) and with `--prompt-weights int8` (ek_gemm_q8_0:
ggml's q8_0 activations per block of 32, exact int32 block sums), and prints each one's largest and mean |Δ log p|
against llama.cpp (llama-cpp-python, fp32 KV cache, one batch; its one-token-at-a-time run gives the same numbers),
and between the two Encore runs. As a control it also prints how far llama.cpp moves from itself when only its KV
cache changes from fp32 to f16 (a ~1e-3 perturbation): on a deep q8_0 model the activations' rounding amplifies any
such difference to the size of the q8_0 error itself.

    /work/venv-llama/bin/python bench/peers/q8_prompts_vs_llamacpp.py --gguf smollm2-q8_0.gguf
      (make the file with: encore quantize --model models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out smollm2-q8_0.gguf --format q8_0)
"""
import argparse, json, subprocess, sys
from pathlib import Path

import numpy as np

TEXT = ("The quick brown fox jumps over the lazy dog. Encoder-decoder models read their input once and then write the "
        "answer token by token, which is why they are cheap on small devices.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="a q8_0 GGUF (llama architecture)")
    ap.add_argument("--encore", default=str(Path(__file__).resolve().parents[2] / ".build/release/encore"))
    ap.add_argument("--input-tokens", type=int, default=10, help="tokens given as input; the rest are scored")
    args = ap.parse_args()
    from llama_cpp import Llama
    n = args.input_tokens

    def llama_cpp(kv_type):   # 0 = GGML_TYPE_F32, 1 = GGML_TYPE_F16
        llm = Llama(model_path=args.gguf, logits_all=True, n_ctx=512, n_threads=2, verbose=False, type_k=kv_type,
                    type_v=kv_type)
        toks = llm.tokenize(TEXT.encode(), add_bos=False)
        if len(toks) <= n + 1:
            sys.exit(f"the text is only {len(toks)} tokens")
        llm.reset()
        llm.eval(toks)
        logits = np.array(llm.scores[:len(toks)], dtype=np.float64)
        m = logits.max(1, keepdims=True)
        lp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
        return toks, np.array([lp[i - 1, toks[i]] for i in range(n, len(toks))])

    toks, ref = llama_cpp(0)
    _, ref_f16kv = llama_cpp(1)

    def encore(prompt_weights):
        r = subprocess.run([args.encore, "score", "--model", args.gguf, "--keep-quantized", "--prompt-weights", prompt_weights,
                            "--input-ids", ",".join(map(str, toks[:n])), "--target-ids", ",".join(map(str, toks[n:])),
                            "--json"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"encore score failed: {r.stderr.strip()}")
        return np.array(json.loads(r.stdout)["logprobs"])

    runs = {pw: encore(pw) for pw in ("f32", "int8")}
    print(f"{args.gguf}: {len(toks)} tokens, {len(ref)} scored")
    for pw, got in runs.items():
        d = np.abs(got - ref)
        print(f"encore --prompt-weights {pw:4s} vs llama.cpp: max |Δ log p| {d.max():.4f}, mean {d.mean():.4f}")
    d = np.abs(runs["f32"] - runs["int8"])
    print(f"encore int8 vs encore f32 prompts:       max |Δ log p| {d.max():.4f}, mean {d.mean():.4f}")
    d = np.abs(ref_f16kv - ref)
    print(f"control: llama.cpp f16 vs fp32 KV cache: max |Δ log p| {d.max():.4f}, mean {d.mean():.4f}")


if __name__ == "__main__":
    main()
