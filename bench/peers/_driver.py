"""Running peer workers and Encore in fresh processes and reading their JSON (used by the drivers)."""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def log(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def parse_json(text: str):
    """The JSON object printed on stdout: the whole output, or its last line that parses."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def first_error_line(stderr: str) -> str:
    lines = [l.strip() for l in stderr.strip().splitlines() if l.strip()]
    for l in reversed(lines):
        if l.lower().startswith("error") or "Error" in l or "error:" in l:
            return l[:200]
    return (lines[-1] if lines else "no output")[:200]


def run(cmd: list[str], timeout: float, env: dict | None = None):
    """Runs cmd; returns (json dict, None) or (None, reason)."""
    t0, load = time.time(), os.getloadavg()[0]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, **(env or {})))
    except FileNotFoundError:
        return None, f"not found: {cmd[0]}"
    except subprocess.TimeoutExpired:
        return None, f"no result within {timeout:.0f} s"
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {first_error_line(p.stderr)}"
    data = parse_json(p.stdout)
    if not isinstance(data, dict) or not isinstance(data.get("results"), list) or not data["results"]:
        return None, f"no JSON results on stdout: {p.stdout.strip()[-200:]!r}"
    data["wall_s"] = round(time.time() - t0, 1)
    data["load_avg_1min_before"] = round(load, 2)   # the host is shared: other jobs' load, for the record
    return data, None


def result_at(data: dict, input_tokens: int) -> dict | None:
    for r in data["results"]:
        if r.get("input_tokens") == input_tokens:
            return r
    return None


def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(v, digits=1, width=10):
    return f"{'n/a' if v is None else f'{v:,.{digits}f}':>{width}}"


def encore_binary(path: str | None) -> str:
    if path:
        return path
    for cand in (os.environ.get("ENCORE_BIN"), str(REPO / ".build" / "release" / "encore")):
        if cand and Path(cand).is_file():
            return cand
    raise SystemExit("Encore binary not found: build it (swift build -c release --product encore --static-swift-stdlib) or pass --encore PATH")


def encore_bench_cmd(binary: str, model: str | None, lengths: list[int], out: int, threads: int, reps: int,
                     extra: list[str] = ()) -> list[str]:
    cmd = [binary, "bench"] + (["--model", model] if model else []) + [
        "--input-tokens", ",".join(map(str, lengths)), "--output-tokens", str(out), "--threads", str(threads),
        "--reps", str(reps), "--json", "--no-limits"]
    return cmd + list(extra)


def show(cmd: list[str]) -> str:
    return shlex.join(cmd)
