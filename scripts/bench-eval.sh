#!/usr/bin/env bash
# Measures the evaluation throughput (images per second) of dcconvert eval
# next to ONNX Runtime 1.30 (CPU, onnxruntime-node from the repository's
# node_modules) on the same models and batch size, in one run:
#   - vgg-mini (1x28x28, 10 classes, random weights) on the Fashion-MNIST
#     test split (10000 images; the synthetic set of 1000 when Debian's
#     dataset-fashion-mnist is not installed);
#   - vgg11 at 3x32x32 with 10 classes (random weights) on the synthetic
#     set made at 3x32x32 (1000 images).
# dcconvert's "inference" figure counts the forward passes alone, its
# "eval" figure the whole loop (decoding and inference overlap). ONNX
# Runtime runs as many batches of the same size as dcconvert does (the last
# one padded the same way), on random inputs prepared before the clock
# starts, after one warm-up run; only session.run is timed.
# Usage: scripts/bench-eval.sh [WORKDIR] (BATCH=64 by default)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work="${1:-$(mktemp -d)}"
mkdir -p "${work}"
batch="${BATCH:-64}"
fashion=/usr/share/datasets/fashion-mnist
modules="${DCCONVERT_ORT_DIR:-$PWD/node_modules}"

go build -o "${work}/dcconvert" ./cmd/dcconvert
"${work}/dcconvert" -q models vgg-mini -o "${work}/vgg-mini.onnx"
"${work}/dcconvert" -q models vgg11 --input 3x32x32 --classes 10 -o "${work}/vgg11.onnx"

mini_data=synthetic
if [[ -f "${fashion}/t10k-images-idx3-ubyte.gz" ]]; then
	mini_data="${fashion}"
fi

# json_field FILE KEY prints one number of an eval report.
json_field() {
	node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); process.stdout.write(String(r[process.argv[2]]))' "$1" "$2"
}

# ort_rate MODEL C H W IMAGES prints ONNX Runtime's images per second.
ort_rate() {
	node - "${modules}" "$@" "${batch}" <<'JS'
const path = require('path');
const [modules, model, c, h, w, images, batch] = process.argv.slice(2);
const ort = require(path.join(modules, 'onnxruntime-node'));
ort.env.logLevel = 'error';
(async () => {
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], logSeverityLevel: 3 });
  const b = Number(batch), n = Number(images);
  const dims = [b, Number(c), Number(h), Number(w)];
  const size = dims.reduce((x, y) => x * y, 1);
  const batches = Math.ceil(n / b);
  let seed = 1;
  const feeds = [];
  for (let i = 0; i < Math.min(batches, 8); i++) {
    const data = new Float32Array(size);
    for (let j = 0; j < size; j++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      data[j] = seed / 4294967296;
    }
    feeds.push({ [session.inputNames[0]]: new ort.Tensor('float32', data, dims) });
  }
  await session.run(feeds[0]); // warm-up
  let ns = 0n;
  for (let i = 0; i < batches; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds[i % feeds.length]);
    ns += process.hrtime.bigint() - t0;
  }
  process.stdout.write((n / (Number(ns) / 1e9)).toFixed(1));
})().catch((err) => { process.stderr.write(`${err.message}\n`); process.exit(1); });
JS
}

ort_version=$(node -e 'process.stdout.write(require(require("path").join(process.argv[1], "onnxruntime-node", "package.json")).version)' "${modules}")
echo "batch ${batch}; ONNX Runtime ${ort_version} (CPU); $(nproc) CPUs"
printf '%-48s %10s %12s %12s %10s\n' "model / data" "eval img/s" "engine img/s" "ORT img/s" "ORT/engine"

# bench NAME MODEL DATA C H W
bench() {
	local name=$1 model=$2 data=$3 c=$4 h=$5 w=$6
	local report="${model%.onnx}.eval.json"
	"${work}/dcconvert" -q eval "${model}" --data "${data}" --batch "${batch}" --json >"${report}"
	local images eval_rate engine_rate ort
	images=$(json_field "${report}" images)
	eval_rate=$(json_field "${report}" images_per_second)
	engine_rate=$(json_field "${report}" inference_images_per_second)
	ort=$(ort_rate "${model}" "${c}" "${h}" "${w}" "${images}")
	printf '%-48s %10.1f %12.1f %12.1f %9.1fx\n' "${name} (${images} images)" "${eval_rate}" "${engine_rate}" "${ort}" \
		"$(node -e 'process.stdout.write(String(process.argv[1] / process.argv[2]))' "${ort}" "${engine_rate}")"
}

bench "vgg-mini 1x28x28 / $(basename "${mini_data}")" "${work}/vgg-mini.onnx" "${mini_data}" 1 28 28
bench "vgg11 3x32x32 / synthetic" "${work}/vgg11.onnx" synthetic 3 32 32
