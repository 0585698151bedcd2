#!/usr/bin/env bash
# Measures reading and writing a VGG16 ONNX model (about 553 MB):
#   - dcconvert: read + check + decode every initializer, and write back
#     (go test -bench in onnximport, one process per measurement so that
#     peak RSS is that of the operation alone);
#   - the I/O floor: cp of the same file;
#   - Debian's python3-onnx: onnx.load of the same file.
# Usage: scripts/bench-read.sh [WORKDIR]   (needs ~2 GB free in WORKDIR)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="${1:-$(mktemp -d)}"
model="${work}/vgg16.onnx"
timefmt='%e s wall, %M KB peak RSS'

go build -o "${work}/dcconvert" ./cmd/dcconvert
go test -c -o "${work}/onnximport.test" ./onnximport
if [[ ! -f "${model}" ]]; then
	"${work}/dcconvert" models vgg16 -o "${model}"
fi
size=$(stat -c %s "${model}")
echo "model: ${model} (${size} bytes)"
sync

echo "--- cp (I/O floor)"
/usr/bin/time -f "${timefmt}" cp "${model}" "${work}/copy.onnx"
rm -f "${work}/copy.onnx"

echo "--- python3 onnx.load"
/usr/bin/time -f "${timefmt}" /usr/bin/python3 -c 'import sys, onnx; onnx.load(sys.argv[1])' "${model}"
/usr/bin/python3 - "${model}" <<'PY'
import statistics, sys, time
import onnx
times = []
for _ in range(5):
    t0 = time.perf_counter()
    onnx.load(sys.argv[1])
    times.append(time.perf_counter() - t0)
print(f"onnx.load alone: median {statistics.median(times) * 1000:.0f} ms over 5 loads")
PY

echo "--- dcconvert read + check + decode (go test -bench, 5 iterations)"
DCCONVERT_BENCH_MODEL="${model}" /usr/bin/time -f "${timefmt}" \
	"${work}/onnximport.test" -test.run '^$' -test.bench '^Benchmark(Read|ReadBytesOnly)$' -test.benchtime 5x -test.benchmem
echo "--- dcconvert read, one iteration (peak RSS of one read)"
DCCONVERT_BENCH_MODEL="${model}" /usr/bin/time -f "${timefmt}" \
	"${work}/onnximport.test" -test.run '^$' -test.bench '^BenchmarkRead$' -test.benchtime 1x
echo "--- dcconvert write (go test -bench, 5 iterations)"
DCCONVERT_BENCH_MODEL="${model}" /usr/bin/time -f "${timefmt}" \
	"${work}/onnximport.test" -test.run '^$' -test.bench '^BenchmarkWrite$' -test.benchtime 5x
