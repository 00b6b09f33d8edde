#!/usr/bin/env python3
"""Training speed, Encore vs PyTorch, in one run: ``encore bench-train`` and ``bench/peers/mu_torch_train.py`` with
the same config, batch, sequence lengths, threads and step count, alternating which goes first over ``--rounds``
(fresh processes each time). Prints each round's tokens/s and the Encore / PyTorch ratio, then the median.

    python3 bench/compare_train.py --encore .build/release/encore --python /work/venv/bin/python --reference /work/mu-ref \\
        --config bench/configs/mu-train-small.json --batch-size 8 --encoder-seq-len 128 --decoder-seq-len 32 \\
        --threads 2 --steps 5 --rounds 3
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def load_average():
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encore", default=".build/release/encore")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--reference", required=True, help="checkout of microsoft/encoder-decoder-slm")
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--encoder-seq-len", type=int, default=128)
    ap.add_argument("--decoder-seq-len", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write-json")
    a = ap.parse_args()
    common = ["--config", a.config, "--batch-size", str(a.batch_size), "--encoder-seq-len", str(a.encoder_seq_len),
              "--decoder-seq-len", str(a.decoder_seq_len), "--threads", str(a.threads), "--steps", str(a.steps), "--json"]
    peer = Path(__file__).resolve().parent / "peers" / "mu_torch_train.py"
    systems = {"encore": [a.encore, "bench-train"] + common,
               "pytorch": [a.python, str(peer), "--reference", a.reference] + common}
    rounds = []
    for r in range(a.rounds):
        order = ["encore", "pytorch"] if r % 2 == 0 else ["pytorch", "encore"]
        res = {}
        for name in order:
            load = load_average()
            res[name] = run(systems[name])
            res[name]["load_before"] = load
        ratio = res["encore"]["tokens_per_s"] / res["pytorch"]["tokens_per_s"]
        rounds.append(dict(order=order, encore=res["encore"], pytorch=res["pytorch"], ratio=ratio,
                           time=time.strftime("%H:%M:%S")))
        print(f"round {r + 1} ({time.strftime('%H:%M')} UTC, {order[0]} first): "
              f"encore {res['encore']['median_step_s']:.3f} s/step, {res['encore']['tokens_per_s']:.0f} tokens/s (load {res['encore']['load_before']}); "
              f"pytorch {res['pytorch']['median_step_s']:.3f} s/step, {res['pytorch']['tokens_per_s']:.0f} tokens/s (load {res['pytorch']['load_before']}); "
              f"Encore/PyTorch {ratio:.2f}", flush=True)
    assert rounds[0]["encore"]["params"] == rounds[0]["pytorch"]["params"], "parameter counts differ"
    med = statistics.median(r["ratio"] for r in rounds)
    print(f"{rounds[0]['encore']['params']:,} parameters, batch {a.batch_size} x ({a.encoder_seq_len} + {a.decoder_seq_len}) tokens, "
          f"{a.threads} threads, {a.steps} timed steps per run: median Encore/PyTorch tokens/s ratio {med:.2f} over {a.rounds} rounds")
    if a.write_json:
        Path(a.write_json).write_text(json.dumps(dict(args=vars(a), rounds=rounds, median_ratio=med), indent=1) + "\n")


if __name__ == "__main__":
    main()
