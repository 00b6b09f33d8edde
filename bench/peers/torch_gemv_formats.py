#!/usr/bin/env python3
"""PyTorch's decode-step matrix-vector products at fp32, bf16 and int8 (quantize_dynamic), in one process.

What the Mu bf16/int8 peers (mu_torch.py --precision) run per decode step, without the model around it: a stack of
Mu-330M-shaped layers (1024 -> 4096 -> 1024, x4) applied to one row, the formats interleaved, one warm-up call
each, the median over --rounds of 10 calls. Prints ms per stack and the fp32-equivalent GB/s, and torch's CPU
path (cpu_capability, whether oneDNN's bf16 kernels are usable, the quantized engine).

    /work/venv/bin/python bench/peers/torch_gemv_formats.py --threads 2
"""
import argparse
import copy
import time
import warnings

import torch
import torch.nn as nn
import torch.ao.quantization as tq


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    m = nn.Sequential(*[nn.Linear(1024, 4096), nn.Linear(4096, 1024)] * 4)
    models = {
        "fp32": (m, torch.float32),
        "bf16": (copy.deepcopy(m).to(torch.bfloat16), torch.bfloat16),
        "int8 per-channel": (tq.quantize_dynamic(copy.deepcopy(m), {nn.Linear: tq.per_channel_dynamic_qconfig},
                                                 dtype=torch.qint8), torch.float32),
        "int8 per-tensor": (tq.quantize_dynamic(copy.deepcopy(m), {nn.Linear}, dtype=torch.qint8), torch.float32),
    }
    x = torch.randn(1, 1024)
    times = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for k, (f, dt) in models.items():
                inp = x.to(dt)
                f(inp)
                t = time.perf_counter()
                for _ in range(10):
                    f(inp)
                times[k].append((time.perf_counter() - t) / 10)
    print(f"torch {torch.__version__}, cpu_capability {torch.backends.cpu.get_cpu_capability()}, "
          f"mkldnn_bf16 {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, quantized engine "
          f"{torch.backends.quantized.engine}, {args.threads} threads")
    w = 8 * 1024 * 4096
    base = sorted(times["fp32"])[len(times["fp32"]) // 2]
    for k, v in times.items():
        med = sorted(v)[len(v) // 2]
        print(f"{k:17s} {med * 1e3:7.2f} ms per stack  {w * 4 / med / 1e9:5.1f} GB/s fp32-equivalent  "
              f"{base / med:4.2f}x fp32's speed")


if __name__ == "__main__":
    main()
