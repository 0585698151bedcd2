#!/usr/bin/env bash
# Measures `dcconvert rewrite` on a VGG16 (about 553 MB) end to end (read,
# rewrite every Conv into ball x cos with a learnable radius, write), and
# in the same run Debian's python3-onnx loading and saving the same file.
# Usage: scripts/bench-rewrite.sh [WORKDIR]   (needs ~2 GB free in WORKDIR)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="${1:-$(mktemp -d)}"
model="${work}/vgg16.onnx"
timefmt='%e s wall, %M KB peak RSS'

go build -o "${work}/dcconvert" ./cmd/dcconvert
go test -c -o "${work}/rewrite.test" ./rewrite
if [[ ! -f "${model}" ]]; then
	"${work}/dcconvert" models vgg16 -o "${model}"
fi
echo "model: ${model} ($(stat -c %s "${model}") bytes)"
sync

for i in 1 2 3; do
	echo "--- dcconvert rewrite --mag ball --rho learn (run ${i})"
	/usr/bin/time -f "${timefmt}" "${work}/dcconvert" rewrite -q "${model}" --mag ball --rho learn -o "${work}/vgg16.dc.onnx"
	echo "--- python3: onnx.load + onnx.save (run ${i})"
	/usr/bin/time -f "${timefmt}" /usr/bin/python3 -c 'import sys, onnx; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])' "${model}" "${work}/py.onnx"
done
echo "--- go test -bench BenchmarkRewrite (3 iterations)"
DCCONVERT_BENCH_MODEL="${model}" "${work}/rewrite.test" -test.run '^$' -test.bench '^BenchmarkRewrite$' -test.benchtime 3x
rm -f "${work}/vgg16.dc.onnx" "${work}/py.onnx"
