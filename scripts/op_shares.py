#!/usr/bin/env python3
"""Per-op time shares of glamexec run records: where a step's time goes.

usage: op_shares.py [--top N] [--peak-tflops F --peak-GBps B] RECORD_OR_FOLDER...
       (a folder: the run records among its *.json)

Ops are grouped by name over layers (L3.attn_softmax.fwd and .bwd of every layer -> attn_softmax).
Shares are of the steps the op times come from: with --op-timing alternate (the CUDA default) those
are the op-timed steps (op_timed_step_time_s), which wait for the device around every op; the step
time of the others is printed beside it. Each group's achieved rates come from the FLOPs and bytes
the executor counts for its ops. With the device's peaks (--peak-tflops and --peak-GBps, both), each
group also gets its roofline time, max(FLOPs / peak, bytes / bandwidth), as a share of its measured
time ("roofline"), the bound that sets it (compute or memory), and the milliseconds above it ("above").
"""
import json
import pathlib
import sys


def records(args):
    for a in args:
        p = pathlib.Path(a)
        if p.is_dir():
            yield from sorted(p.glob("*.json"))
        elif p.exists():
            yield p


def size(b):
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def rate(x):
    return f"{x:9.2f}" if x < 1e5 else f"{x:9.3g}"


def group(op_id):
    parts = op_id.split(".")
    return parts[1] if op_id.startswith("L") and len(parts) > 1 else parts[0]


def main(argv):
    top, peak_flops, peak_Bps = 10, None, None
    while len(argv) >= 2 and argv[0] in ("--top", "--peak-tflops", "--peak-GBps"):
        try:
            value = float(argv[1])
        except ValueError:
            value = -1.0
        if not value > 0:
            print(f"op_shares.py: {argv[0]} {argv[1]}: expected a positive number", file=sys.stderr)
            return 2
        if argv[0] == "--top":
            top = int(value)
        elif argv[0] == "--peak-tflops":
            peak_flops = value * 1e12
        else:
            peak_Bps = value * 1e9
        argv = argv[2:]
    if not argv or (peak_flops is None) != (peak_Bps is None):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    roofline = peak_flops is not None
    for path in records(argv):
        try:
            r = json.loads(path.read_text())
            ops, step = r["ops"], r["step_time_s"]["median"]
        except (ValueError, KeyError, TypeError):
            continue  # not a run record
        timed_step = r.get("op_timed_step_time_s", r["step_time_s"])["median"]
        groups = {}  # name -> [seconds, FLOPs, bytes]
        for op in ops:
            g = groups.setdefault(group(op["id"]), [0.0, 0.0, 0.0])
            g[0] += op["median_s"]
            g[1] += op.get("flops", 0.0)
            g[2] += op.get("bytes", 0.0)
        timed = sum(g[0] for g in groups.values())
        memory = r.get("device", {}).get("memory", {})
        filled = ""
        if "step_buffers_bytes" in memory:
            filled = f"; buffers {size(memory['step_buffers_bytes'])}"
            if "free_bytes_before" in memory:
                filled += f" of {size(memory['free_bytes_before'])} free"
        print(f"{path.name}: step {step * 1e3:.1f} ms; with op timers {timed_step * 1e3:.1f} ms, "
              f"ops {timed * 1e3:.1f} ms ({100 * timed / timed_step:.0f}% of it){filled}")
        header = f"  {'op':18s} {'share':>6s} {'time':>12s} {'TFLOP/s':>9s} {'GB/s':>9s}"
        print(header + (f" {'roofline':>8s} {'bound':>7s} {'above':>10s}" if roofline else ""))
        above_all = 0.0
        ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])
        for rank, (name, (seconds, flops, nbytes)) in enumerate(ranked):
            compute_s, memory_s = (flops / peak_flops, nbytes / peak_Bps) if roofline else (0.0, 0.0)
            bound_s = max(compute_s, memory_s)
            above = max(0.0, seconds - bound_s)  # an op counted faster than its roofline is above it by 0
            above_all += above
            if rank >= top:
                continue
            per_s = 1 / seconds if seconds > 0 else 0.0
            line = (f"  {name:18s} {100 * seconds / timed_step:5.1f}% {seconds * 1e3:9.2f} ms "
                    f"{rate(flops * per_s / 1e12)} {rate(nbytes * per_s / 1e9)}")
            if roofline:
                kind = "compute" if compute_s >= memory_s else "memory"
                line += f" {100 * bound_s * per_s:7.1f}% {kind:>7s} {above * 1e3:7.2f} ms"
            print(line)
        if roofline:
            print(f"  above the ops' rooflines: {above_all * 1e3:.1f} ms of the {timed * 1e3:.1f} ms in ops; "
                  f"outside the ops: {(timed_step - timed) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
