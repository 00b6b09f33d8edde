#!/usr/bin/env python3
"""HF `tokenizers` speed on the same text and tokenizers as `tok-demo bench`.

Make the text:  python bench/tokenizers/bench_hf.py --make-text /tmp/bench-10mb.txt
SmolLM2:        python bench/tokenizers/bench_hf.py --make-smollm-json SMOLLM2.gguf /tmp/smollm2
Run:            RAYON_NUM_THREADS=2 DUMP_IDS_DIR=/tmp/ids python bench/tokenizers/bench_hf.py \
                    /tmp/bench-10mb.txt PHI/tokenizer.json /tmp/smollm2/tokenizer.json
Reports an `encode` loop over the lines (one thread) and `encode_batch` (RAYON_NUM_THREADS threads).
With DUMP_IDS_DIR, writes the ids of every line to DIR/<folder>.ids for `tok-demo bench --expect`.
"""
import glob
import os
import sys
import time


def make_text(path, target=10 * 1024 * 1024):
    """Mixed text: Python stdlib source (code), Debian license texts (English prose), and the
    multilingual golden corpus lines, cycled until `target` bytes."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "tools", "goldens", "tokenizers"))
    import make_goldens as mg
    parts = []
    for f in sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))[:4000]:
        try:
            parts.append(open(f, encoding="utf-8").read())
        except Exception:
            pass
    for f in sorted(glob.glob("/usr/share/common-licenses/*")):
        try:
            parts.append(open(f, encoding="utf-8").read())
        except Exception:
            pass
    multi = "\n".join(t for t in mg.CORPUS if t)
    out, size, i = [], 0, 0
    while size < target:
        chunk = parts[i % len(parts)] + "\n" + multi + "\n"
        out.append(chunk)
        size += len(chunk.encode("utf-8"))
        i += 1
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(out))
    print(f"wrote {path}: {size} bytes")


def main():
    if sys.argv[1] == "--make-text":
        make_text(sys.argv[2])
        return
    if sys.argv[1] == "--make-smollm-json":
        # SmolLM2's tokenizer.json rebuilt from the GGUF vocabulary (same as the goldens use).
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.join(here, "..", "..", "tools", "goldens", "tokenizers"))
        import make_goldens as mg
        os.makedirs(sys.argv[3], exist_ok=True)
        mg.smollm_hf_tokenizer(sys.argv[2]).save(os.path.join(sys.argv[3], "tokenizer.json"))
        return
    from tokenizers import Tokenizer
    import tokenizers
    text_path = sys.argv[1]
    data = open(text_path, encoding="utf-8", newline="").read()  # keep \r\n as is
    lines = data.split("\n")
    mb = len(data.encode("utf-8")) / 1e6
    threads = os.environ.get("RAYON_NUM_THREADS", "default")
    for p in sys.argv[2:]:
        tok = Tokenizer.from_file(p)
        t0 = time.perf_counter()
        n = 0
        for line in lines:
            n += len(tok.encode(line, add_special_tokens=False).ids)
        t1 = time.perf_counter()
        enc = tok.encode_batch(lines, add_special_tokens=False)
        t2 = time.perf_counter()
        n2 = sum(len(e.ids) for e in enc)
        dump = os.environ.get("DUMP_IDS_DIR")
        if dump:
            name = os.path.basename(os.path.dirname(p))
            with open(os.path.join(dump, name + ".ids"), "w") as f:
                for e in enc:
                    f.write(" ".join(map(str, e.ids)) + "\n")
        print(f"HF tokenizers {tokenizers.__version__} {p}: {mb:.1f} MB, {n} tokens; "
              f"encode loop (1 thread) {mb / (t1 - t0):.2f} MB/s; encode_batch (RAYON_NUM_THREADS={threads}) "
              f"{mb / (t2 - t1):.2f} MB/s ({n2} tokens)")


if __name__ == "__main__":
    main()
