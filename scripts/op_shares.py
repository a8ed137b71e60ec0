#!/usr/bin/env python3
"""Per-op time shares of glamexec run records: where a step's time goes.

usage: op_shares.py [--top N] RECORD_OR_FOLDER...   (a folder: the run records among its *.json)

Ops are grouped by name over layers (L3.attn_softmax.fwd and .bwd of every layer -> attn_softmax).
Shares are of the steps the op times come from: with --op-timing alternate (the CUDA default) those
are the op-timed steps (op_timed_step_time_s), which wait for the device around every op; the step
time of the others is printed beside it.
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


def group(op_id):
    parts = op_id.split(".")
    return parts[1] if op_id.startswith("L") and len(parts) > 1 else parts[0]


def main(argv):
    top = 10
    if len(argv) >= 2 and argv[0] == "--top":
        top, argv = int(argv[1]), argv[2:]
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for path in records(argv):
        try:
            r = json.loads(path.read_text())
            ops, step = r["ops"], r["step_time_s"]["median"]
        except (ValueError, KeyError, TypeError):
            continue  # not a run record
        timed_step = r.get("op_timed_step_time_s", r["step_time_s"])["median"]
        groups = {}
        for op in ops:
            groups[group(op["id"])] = groups.get(group(op["id"]), 0.0) + op["median_s"]
        timed = sum(groups.values())
        memory = r.get("device", {}).get("memory", {})
        filled = ""
        if "step_buffers_bytes" in memory:
            filled = f"; buffers {size(memory['step_buffers_bytes'])}"
            if "free_bytes_before" in memory:
                filled += f" of {size(memory['free_bytes_before'])} free"
        print(f"{path.name}: step {step * 1e3:.1f} ms; with op timers {timed_step * 1e3:.1f} ms, "
              f"ops {timed * 1e3:.1f} ms ({100 * timed / timed_step:.0f}% of it){filled}")
        for name, seconds in sorted(groups.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {name:18s} {100 * seconds / timed_step:5.1f}%  {seconds * 1e3:9.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
