#!/usr/bin/env python3
"""What saving and resuming a checkpoint cost: runs `glamexec train` one step without a checkpoint, one
step with --save, and one step with --resume of that file, each in a fresh process, and prints each
run's wall time and peak resident memory, and the checkpoint's size. The differences from the plain
run are the checkpoint's own cost (the runs also initialise the model and take one training step).

usage: exec/bench/checkpoint_cost.py [--build DIR] [ARGS for glamexec train...]
  default ARGS: --model glam-0.1b-64e --layers 2 --batch-tokens 1024 --random-tokens (a 2.1 GB file)
"""
import os
import resource
import subprocess
import sys
import tempfile
import time


def run(cmd):
    """Wall seconds and peak RSS (GiB) of one command, each in a fresh child whose peak is its own."""
    # A child of a child: RUSAGE_CHILDREN keeps the largest peak of all waited-for children, so each run
    # is measured in a process of its own.
    probe = ("import resource,subprocess,sys,time;t=time.time();"
             "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL);"
             "print(time.time()-t,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,r.returncode)")
    out = subprocess.run([sys.executable, "-c", probe] + cmd, capture_output=True, text=True, check=True).stdout.split()
    if out[2] != "0":
        sys.exit("checkpoint_cost.py: failed: " + " ".join(cmd))
    return float(out[0]), int(out[1]) / 2**20


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = sys.argv[1:]
    build = os.path.join(root, "build")
    if args[:1] == ["--build"]:
        build, args = args[1], args[2:]
    glamexec = os.path.join(build, "bin", "glamexec")
    if not os.access(glamexec, os.X_OK):
        sys.exit("checkpoint_cost.py: %s not built" % glamexec)
    args = args or ["--model", "glam-0.1b-64e", "--layers", "2", "--batch-tokens", "1024", "--random-tokens"]
    base = [glamexec, "train", "--quiet", "--steps", "1"] + args
    os.environ.setdefault("GLAM_HOME", root)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "bench.ckpt")
        rows = [("plain step", run(base)), ("--save", run(base + ["--save", ckpt]))]
        size = os.path.getsize(ckpt) / 2**30
        rows.append(("--resume", run(base + ["--resume", ckpt])))
    print("glamexec train --steps 1 " + " ".join(args) + "; checkpoint %.2f GiB" % size)
    print("%-12s %8s %10s %12s %12s" % ("run", "wall s", "peak GiB", "extra s", "extra GiB"))
    t0, m0 = rows[0][1]
    for name, (t, m) in rows:
        print("%-12s %8.1f %10.2f %12.1f %12.2f" % (name, t, m, t - t0, m - m0))


if __name__ == "__main__":
    main()
