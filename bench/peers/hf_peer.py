#!/usr/bin/env python3
"""Hugging Face transformers peer: times one model folder (Llama-family causal LM or T5) with ``generate``.

``model.generate(greedy, use_cache=True, no EOS stop)``; a logits processor records the time of every step,
so TTFT is input ids -> the first step's logits (prefill, or encoder + first decoder step) and decode
tokens/s covers steps 2..N. --dtype bf16 loads the weights in bfloat16 (compute in bf16 too).

Usage (prints the JSON described in _common.py on stdout):

    /work/venv/bin/python bench/peers/hf_peer.py --model /tmp/encore-peers/llama-hf --dtype fp32 \\
        --threads 2 --input-tokens 512 --output-tokens 64 --reps 2
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> int:
    ap = C.worker_args(__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="Hugging Face folder (config.json + safetensors)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--name", help="model name in the JSON (default: the folder name)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, LogitsProcessor, \
        LogitsProcessorList

    torch.set_num_threads(args.threads)
    log = C.log_stderr(f"hf {args.dtype}")
    cfg = AutoConfig.from_pretrained(args.model)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    enc_dec = bool(getattr(cfg, "is_encoder_decoder", False))
    cls = AutoModelForSeq2SeqLM if enc_dec else AutoModelForCausalLM
    model = cls.from_pretrained(args.model, dtype=dtype)
    model.eval()
    model.generation_config.eos_token_id = None   # no early stop: exactly --output-tokens tokens
    params = sum(p.numel() for p in model.parameters())

    class Stamp(LogitsProcessor):
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            self.times.append(C.now())
            return scores

    def run_once(ids, n_out):
        stamp = Stamp()
        x = torch.tensor([ids])
        kw = dict(max_new_tokens=n_out, min_new_tokens=n_out, do_sample=False, use_cache=True,
                  num_beams=1, logits_processor=LogitsProcessorList([stamp]),
                  attention_mask=torch.ones_like(x), pad_token_id=cfg.pad_token_id or 0)
        if enc_dec:
            kw["decoder_start_token_id"] = cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else 0
        with torch.inference_mode():
            t0 = C.now()
            out = model.generate(x, **kw)
            t_end = C.now()
        n = out.shape[1] - (1 if enc_dec else len(ids))
        return t0, stamp.times[0], t_end, n

    results = C.measure(run_once, args, cfg.vocab_size, log)
    name = args.name or Path(args.model).name
    for r in results:
        r.update(model=name, params=params)
    C.emit({"system": "hf-transformers", "version": f"transformers {transformers.__version__}, torch "
            f"{torch.__version__}", "threads": args.threads, "precision": args.dtype, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
