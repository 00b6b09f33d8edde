#!/usr/bin/env python3
"""Build a real "long input -> short output" dataset from Debian package descriptions (offline once fetched).

Each Debian package has a one-line synopsis and a long description written by its maintainer. The pairs are

    {"source": <long description>, "target": <synopsis>, "package": <name>}

i.e. summarisation: an encoder-decoder reads the whole paragraph once and writes a handful of words, the
setting the paper's Mu is built for. Long descriptions are de-duplicated (many -dev/-doc packages share one);
paragraph breaks (" .") become newlines; records without a long description are dropped. The split is by a
hash of the package name (``--val-percent``), so it is stable when the index changes; both files are written
in a seeded random order.

Input: the Debian ``Translation-en`` index (bookworm main: 63,957 records, 12.6 MB lz4). This machine's apt
does not fetch it by default (``Acquire::Languages "none"``); ``--fetch DIR`` runs, with apt's own client,

    apt-get update -o Acquire::Languages=en -o Dir::State::Lists=DIR

(a scratch lists folder: the system's lists are left alone), then reads
``DIR/*_main_i18n_Translation-en.lz4`` with ``/usr/lib/apt/apt-helper cat-file``. Or pass the index files
(``.lz4`` or plain text) as arguments.

Usage:

    python3 tools/data/make_debian_descriptions.py --fetch /tmp/aptlists --out data/debian
    python3 tools/data/make_debian_descriptions.py /tmp/aptlists/*_main_i18n_Translation-en.lz4 --out data/debian

Writes OUT/train.jsonl, OUT/val.jsonl (atomically) and prints the counts.

For distillation from an instruction-tuned teacher, ``--chatml`` wraps each source in a ChatML turn asking for the
synopsis (``<|im_start|>user\nWrite the one-line synopsis of this Debian package.\n<text><|im_end|>\n<|im_start|>assistant\n``,
SmolLM2's template), so the teacher's predictions of the target are meaningful, and ``--max-source-words N`` cuts
the long text first (so that truncation at the encoder length never cuts the turn's end):

    python3 tools/data/make_debian_descriptions.py INDEX --out data/debian-chatml --chatml --max-source-words 50
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

APT_HELPER = "/usr/lib/apt/apt-helper"


def read_index(path: str) -> str:
    if path.endswith(".lz4") or path.endswith(".xz") or path.endswith(".gz"):
        return subprocess.run([APT_HELPER, "cat-file", path], check=True, capture_output=True).stdout.decode("utf-8", "replace")
    return Path(path).read_text(encoding="utf-8", errors="replace")


def records(text: str):
    """(package, synopsis, long description) for every record with a long description."""
    for block in text.split("\n\n"):
        package, short, body, in_desc = None, None, [], False
        for line in block.split("\n"):
            if line.startswith("Package:"):
                package = line.split(":", 1)[1].strip()
                in_desc = False
            elif line.startswith("Description-en:"):
                short = line.split(":", 1)[1].strip()
                in_desc = True
            elif in_desc and line.startswith(" "):
                body.append(line[1:])
            else:
                in_desc = False
        if package and short and body:
            paragraphs, cur = [], []
            for l in body:
                if l.strip() == ".":
                    if cur:
                        paragraphs.append(" ".join(cur))
                    cur = []
                else:
                    cur.append(l.strip())
            if cur:
                paragraphs.append(" ".join(cur))
            long = "\n".join(p for p in paragraphs if p)
            if long:
                yield package, short, long


def write_jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", nargs="*", help="Translation-en index files (.lz4 or text)")
    ap.add_argument("--fetch", metavar="DIR", help="fetch the index into this scratch apt lists folder first")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--val-percent", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chatml", action="store_true", help="wrap sources in a ChatML user turn asking for the synopsis")
    ap.add_argument("--max-source-words", type=int, default=0, help="cut the long text to this many words (0: keep)")
    a = ap.parse_args()
    files = list(a.index)
    if a.fetch:
        os.makedirs(os.path.join(a.fetch, "partial"), exist_ok=True)
        subprocess.run(["apt-get", "update", "-o", "Acquire::Languages=en", "-o", f"Dir::State::Lists={a.fetch}"], check=True)
        files += sorted(glob.glob(os.path.join(a.fetch, "*_main_i18n_Translation-en*")))
    if not files:
        sys.exit("no index: give Translation-en files or --fetch DIR")
    seen, train, val, total = set(), [], [], 0
    for path in files:
        for package, short, long in records(read_index(path)):
            total += 1
            if long in seen:
                continue
            seen.add(long)
            text = long
            if a.max_source_words > 0:
                words = long.split(" ")
                if len(words) > a.max_source_words:
                    text = " ".join(words[:a.max_source_words]) + " ..."
            if a.chatml:
                text = ("<|im_start|>user\nWrite the one-line synopsis of this Debian package.\n" + text
                        + "<|im_end|>\n<|im_start|>assistant\n")
            row = {"source": text, "target": short, "package": package}
            h = int(hashlib.sha256(package.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            (val if h < a.val_percent / 100 else train).append(row)
    rng = random.Random(a.seed)
    rng.shuffle(train)
    rng.shuffle(val)
    write_jsonl(a.out / "train.jsonl", train)
    write_jsonl(a.out / "val.jsonl", val)
    words = sorted(len(r["source"].split()) for r in train)   # after any cut and wrapping
    print(f"{total} records with a long description, {len(seen)} unique long texts: {len(train)} train, {len(val)} val "
          f"(source words: median {words[len(words) // 2]}, p90 {words[int(len(words) * 0.9)]})")


if __name__ == "__main__":
    main()
