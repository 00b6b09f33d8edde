#!/usr/bin/env python3
"""CTranslate2 peer: times one converted model (Llama-family ``Generator`` or T5 ``Translator``).

Greedy (``sampling_topk=1``) through ``generate_tokens`` with min = max length = --output-tokens (no early
stop); TTFT is input -> the first yielded token, decode tokens/s covers tokens 2..N. ``--compute-type``
float32 or int8 (int8 quantizes a float32 model at load unless the folder was converted to int8);
intra_threads = --threads, inter_threads = 1.

Usage (prints the JSON described in _common.py on stdout):

    /work/venv/bin/python bench/peers/ct2_peer.py --model /tmp/encore-peers/llama-ct2-int8 --compute-type int8 \\
        --threads 2 --input-tokens 512 --output-tokens 64 --reps 2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def vocabulary(folder: Path) -> list[str]:
    for name in ("shared_vocabulary.json", "vocabulary.json", "target_vocabulary.json"):
        p = folder / name
        if p.is_file():
            return json.loads(p.read_text())
    for name in ("shared_vocabulary.txt", "vocabulary.txt"):
        p = folder / name
        if p.is_file():
            return p.read_text().split("\n")[:-1]
    raise SystemExit(f"{folder}: no vocabulary file")


def main() -> int:
    ap = C.worker_args(__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="CTranslate2 model folder")
    ap.add_argument("--compute-type", default="float32")
    ap.add_argument("--name", help="model name in the JSON (default: the folder name)")
    args = ap.parse_args()
    import ctranslate2

    folder = Path(args.model)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    vocab = vocabulary(folder)
    enc_dec = (folder / "shared_vocabulary.json").is_file() or (folder / "source_vocabulary.json").is_file() \
        or "decoder_start_token" in config
    kw = dict(device="cpu", compute_type=args.compute_type, intra_threads=args.threads, inter_threads=1)
    engine = ctranslate2.Translator(str(folder), **kw) if enc_dec else ctranslate2.Generator(str(folder), **kw)
    log = C.log_stderr(f"ct2 {args.compute_type}")

    def run_once(ids, n_out):
        toks = [vocab[i] for i in ids]
        if enc_dec:
            it = engine.generate_tokens(toks, max_decoding_length=n_out, min_decoding_length=n_out, sampling_topk=1)
        else:
            it = engine.generate_tokens(toks, max_length=n_out, min_length=n_out, sampling_topk=1)
        t0 = C.now()
        t_first, n = None, 0
        for _ in it:
            n += 1
            if n == 1:
                t_first = C.now()
        return t0, t_first, C.now(), n

    results = C.measure(run_once, args, len(vocab), log)
    name = args.name or folder.name
    for r in results:
        r.update(model=name)
    C.emit({"system": "ctranslate2", "version": f"ctranslate2 {ctranslate2.__version__}", "threads": args.threads,
            "precision": args.compute_type, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
