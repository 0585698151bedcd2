#!/usr/bin/env bash
# Measures a training step of vgg-mini (batch 64, 1x28x28, float32) on the
# engine, with gonum's pure-Go BLAS and with OpenBLAS (openblas build tag,
# needs libopenblas-dev), next to PyTorch 1.13 on the same net with 2
# threads, in one run; and the decoupled convolution against Gorgonia's
# Conv2d (64->64 3x3, batch 32, 32x32) with both BLAS builds.
# The engine's step is forward + loss + backward; PyTorch's also zeroes the
# gradients. Neither includes an optimiser update.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "--- engine, gonum BLAS"
go test -run '^$' -bench 'TrainStepVGGMini|DecoupledConv' -benchtime 10x ./engine | grep -E '^Benchmark'
if dpkg -s libopenblas-dev >/dev/null 2>&1; then
	echo "--- engine, OpenBLAS"
	CGO_LDFLAGS=-lopenblas go test -tags openblas -run '^$' -bench 'TrainStepVGGMini|DecoupledConv' -benchtime 10x ./engine | grep -E '^Benchmark'
else
	echo "--- engine, OpenBLAS: skipped (apt-get install -y libopenblas-dev)"
fi

echo "--- PyTorch 1.13, 2 threads"
/usr/bin/python3 - <<'PY'
import statistics, time
import torch
import torch.nn as nn
torch.set_num_threads(2)
torch.manual_seed(1)
# vgg-mini as dcconvert's models package builds it.
net = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Dropout(), nn.Linear(64, 10))
net.train()
x = torch.randn(64, 1, 28, 28)
y = torch.arange(64) % 10
loss_fn = nn.CrossEntropyLoss()
def step():
    net.zero_grad(set_to_none=True)
    loss_fn(net(x), y).backward()
for _ in range(3):
    step()
times = []
for _ in range(10):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
print(f"BenchmarkTorchTrainStepVGGMini  10  {statistics.median(times) * 1e9:.0f} ns/op (median)")
PY
