#!/usr/bin/env python3
"""Compare the per-step losses of an unbroken training run with a run that was killed and resumed.

Reads `encore train --log` JSONL files: the unbroken run's, and any number of logs of the interrupted run (the
killed process's and the resumed one's; a step logged twice — run again after the kill — must agree with itself).
Prints a few steps side by side and whether every step's loss is bit-identical (exact float equality).

    python3 tools/compare_train_logs.py straight.jsonl killed.jsonl resumed.jsonl
"""

import json
import sys


def steps(path):
    out = {}
    for line in open(path):
        o = json.loads(line)
        if o.get("message") == "training_step":
            out.setdefault(o["step"], []).append((o["loss"], o.get("kd_loss"), o.get("ce_loss")))
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    want = {s: v[0] for s, v in steps(sys.argv[1]).items()}
    got = {}
    for path in sys.argv[2:]:
        part = steps(path)
        print(f"{path}: steps {min(part)}..{max(part)}")
        for s, v in part.items():
            got.setdefault(s, []).extend(v)
    missing = sorted(set(want) - set(got))
    differ = sorted(s for s in want if s in got and any(x != want[s] for x in got[s]))
    rerun = sorted(s for s in got if len(got[s]) > 1)
    for s in sorted(set([min(want), max(want)] + rerun[:3] + differ[:3])):
        print(f"step {s:4d}  unbroken loss {want[s][0]!r:22}  interrupted run {[x[0] for x in got.get(s, [])]}")
    print(f"{len(want)} steps: {len(want) - len(missing) - len(differ)} identical, {len(differ)} different, {len(missing)} missing; "
          f"{len(rerun)} steps ran twice (after the kill) and agree: {all(len(set(got[s])) == 1 for s in rerun)}")
    sys.exit(1 if differ or missing else 0)


if __name__ == "__main__":
    main()
