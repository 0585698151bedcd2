"""The onnx (Python) side of bench/run.sh's VGG16 read and write workloads.

Run with Debian's /usr/bin/python3 (python3-onnx). Prints "ns N", the mean
time of RUNS calls in one process:

  onnx_peer.py load MODEL RUNS       onnx.load of MODEL
  onnx_peer.py save MODEL OUT RUNS   onnx.save to OUT of MODEL, loaded once
"""

import sys
import time

import onnx


def mean_ns(fn, runs):
    t0 = time.perf_counter_ns()
    for _ in range(int(runs)):
        fn()
    print(f"ns {(time.perf_counter_ns() - t0) / int(runs):.0f}")


def load(model, runs):
    mean_ns(lambda: onnx.load(model), runs)


def save(model, out, runs):
    m = onnx.load(model)
    mean_ns(lambda: onnx.save(m, out), runs)


COMMANDS = {"load": load, "save": save}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
