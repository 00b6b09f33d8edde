"""Where the main thread's time goes during decode steps, from a `perf record -g` of `encore bench`.

    perf record -F 2000 -g -o perf.data .build/release/encore bench --models mu --input-tokens 512 \
        --output-tokens 256 --reps 1 --decode-weights q4_0 --quality-tokens 0 --no-limits
    python3 bench/micro/perf_step_breakdown.py perf.data [advance]

Counts the main thread's samples whose stack contains `advance` (GenerationState.advance: one decode step) by
leaf-symbol category: decode GEMV kernels, attention kernels, waiting in the pool (ek_parallel_for's spin and
sched_yield), activation quantization, element-wise kernels, Swift runtime. Worker-thread samples are not
counted (they run the same kernels' other tasks, or spin).
"""
import sys, subprocess, collections, re
data = sys.argv[1]; key = sys.argv[2] if len(sys.argv)>2 else "advance"
out = subprocess.run(["perf","script","-i",data,"-F","pid,tid,period,ip,sym"],capture_output=True,text=True).stdout
samples=[]; cur=None
for line in out.split("\n"):
    if not line.strip():
        if cur: samples.append(cur); cur=None
        continue
    if not line.startswith("\t"):
        p=line.split(); a,b=p[0].split("/"); cur={"pid":int(a),"tid":int(b),"stack":[]}
    else:
        s=line.strip().split(None,1); cur["stack"].append(s[1] if len(s)>1 else "?")
if cur: samples.append(cur)
cats=[("gemv",r"rows_|qtask|ek_gemv_quant|gemv"),("attention",r"group_scores|group_values|chunk_softmax|attention_engine|attn_task|ek_axpy"),
("pool wait",r"ek_parallel_for|sched_yield|__schedule|do_sched_yield|schedule|pthread_mutex|syscall|futex|_raw_spin|pthread_cond"),
("act quantize",r"quantize_|f32_to_f16|f16_to_f32|interleave_pairs"),("elementwise",r"gelu|rmsnorm|rope|ek_add|memmove|memcpy|memset|cosf|sinf|expf|argmax"),
("swift runtime",r"swift_|\$s|\$ss|Hasher|AccessSet|NSLock|tls_get")]
def cat(f):
    for n,r in cats:
        if re.search(r,f): return n
    return "other:"+f[:60]
main=[s for s in samples if s["pid"]==s["tid"] and any(key in f for f in s["stack"])]
c=collections.Counter(cat(s["stack"][0]) for s in main)
N=len(main); print(f"main-thread samples under '{key}': {N}")
for k,v in c.most_common(20): print(f"{100*v/N:6.2f}% {k}")
