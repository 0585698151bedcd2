#!/usr/bin/env bash
# Measures dcconvert next to its peers on the same workloads, in one run, and
# prints one table: dcconvert's figure, the peer's, their ratio
# (dcconvert / peer: above 1 means dcconvert is slower or uses more memory)
# and the throughputs.
#
#   train    Trainer.TrainStep (forward, backward, SGD with momentum and
#            weight decay) at batch 64: vgg-mini 1x28x28 and the CIFAR-style
#            VGG-11 3x32x32, plain and rewritten into ball x cos with a
#            learnable radius (go test -bench TrainStep ./finetune), against
#            PyTorch 1.13 on the same nets (bench/torch_peer.py).
#   conv     the decoupled convolution against the engine's own Conv2d,
#            forward + backward, 64->64 3x3, batch 32, 32x32 (go test -bench
#            DecoupledConv ./engine): a ratio within dcconvert.
#   eval     dcconvert eval's throughput against ONNX Runtime 1.30 (CPU,
#            onnxruntime-node, found as internal/peer finds it) on vgg-mini
#            (Fashion-MNIST's test split, or the synthetic set) and VGG-11
#            3x32x32 (synthetic), batch 64, random weights.
#   read     --heavy: reading and writing a VGG16 (553 MB) against Python's
#            onnx.load and onnx.save (bench/onnx_peer.py), and the peak RSS
#            of one read against one onnx.load.
#   rewrite  --heavy: `dcconvert rewrite --mag ball --rho learn` of the same
#            VGG16, end to end, against a python3 process that loads and
#            saves it with onnx.
#   memory   --heavy: time and peak RSS of one training step of VGG16,
#            3x224x224, batch 8 (go test -bench VGG16Step ./finetune)
#            against torchvision's vgg16 in PyTorch.
#
# Every Go figure is measured with GOMAXPROCS=2 and every peer on 2 threads
# (torch.set_num_threads(2), ONNX Runtime's intraOpNumThreads 2), BLAS
# libraries capped at 2 threads, whatever the machine has. Go runs with
# gonum's pure-Go BLAS and, when libopenblas-dev is installed, with OpenBLAS
# (-tags openblas). Training, evaluation and rewrite workloads alternate
# with their peer for ROUNDS rounds and report each side's best round, the
# one least disturbed by other processes; the peers' worker threads sleep
# while they wait, as Go's do (OMP_WAIT_POLICY=PASSIVE unless set, and
# ONNX Runtime's session.intra_op.allow_spinning 0 with it). Absolute
# numbers stay noisy on a shared machine: compare the ratios of one run.
#
# Usage: bench/run.sh [--heavy] [--only SECTION,...] [WORKDIR]
#   --heavy   also run read, rewrite and memory (builds a 553 MB model,
#             needs ~2 GB free in WORKDIR and ~12 GB of memory)
#   --only    run just the listed sections (train, conv, eval, read,
#             rewrite, memory; heavy ones included)
#   WORKDIR   where models and logs go (default: a temporary directory,
#             removed at the end)
# Environment: ROUNDS (3), MINI_STEPS (20) and VGG11_STEPS (5) steps per
# round, CONV_ITERS (5), BATCH (64, evaluation), OMP_WAIT_POLICY (PASSIVE),
# DCCONVERT_ORT_DIR (a node_modules directory holding onnxruntime-node
# instead of the repository's).
set -euo pipefail

usage() {
	sed -n '/^# Usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

heavy=0
only=""
work=""
while (($# > 0)); do
	case "$1" in
	--heavy) heavy=1 ;;
	--only)
		only="${2:?--only needs a list of sections}"
		shift
		;;
	--only=*) only="${1#--only=}" ;;
	-h | --help)
		usage
		exit 0
		;;
	-*)
		usage >&2
		exit 2
		;;
	*) work="$1" ;;
	esac
	shift
done

sections=(train conv eval read rewrite memory)
for s in ${only//,/ }; do
	if [[ " ${sections[*]} " != *" ${s} "* ]]; then
		echo "bench/run.sh: --only ${only}: unknown section ${s}; the sections are ${sections[*]}" >&2
		exit 2
	fi
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo}"
if [[ -n "${work}" ]]; then
	mkdir -p "${work}"
	work="$(cd "${work}" && pwd)"
else
	work="$(mktemp -d)"
	trap 'rm -rf "${work}"' EXIT
fi

export GOMAXPROCS=2 OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2
# OpenMP threads that spin while they wait lose whole time slices to any
# other process on the machine (PyTorch's steps then take 4-10 times as
# long); waiting threads that sleep, as idle Go threads do, keep it fair.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
ort_spin=1 # ONNX Runtime's session.intra_op.allow_spinning, following OMP_WAIT_POLICY
if [[ "${OMP_WAIT_POLICY^^}" == PASSIVE ]]; then
	ort_spin=0
fi
threads=2
rounds="${ROUNDS:-3}"
mini_steps="${MINI_STEPS:-20}"
vgg11_steps="${VGG11_STEPS:-5}"
conv_iters="${CONV_ITERS:-5}"
batch="${BATCH:-64}"
python=/usr/bin/python3 # Debian's: the one that sees python3-torch and python3-onnx
ort_version=1.30.0
fashion=/usr/share/datasets/fashion-mnist
rows="${work}/rows.tsv"
: >"${rows}"
hints=()
notes=()

# selected SECTION reports whether the section runs.
selected() {
	if [[ -n "${only}" ]]; then
		[[ ",${only}," == *",$1,"* ]]
		return
	fi
	case "$1" in
	read | rewrite | memory) ((heavy)) ;;
	*) true ;;
	esac
}

# row WORKLOAD KIND DCCONVERT PEER ITEMS ITEM_UNIT PEER_NAME adds a line to
# the table. KIND is time (values in ns; ITEMS of ITEM_UNIT are done per
# operation, for the throughput) or memory (values in KiB). A value of "-"
# is missing.
row() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"${rows}"
}

# bench_value FILE NAME UNIT prints the figure of benchmark NAME (without
# its -GOMAXPROCS suffix) followed by UNIT in go test output, or "-".
bench_value() {
	awk -v name="$2" -v unit="$3" '
		{ n = $1; sub(/-[0-9]+$/, "", n) }
		n == name { for (i = 3; i < NF; i++) if ($(i + 1) == unit) v = $i }
		END { print (v == "" ? "-" : v) }' "$1"
}

# key_value FILE KEY prints the value of a "key value" line, or "-".
key_value() {
	awk -v key="$2" '$1 == key { v = $2 } END { print (v == "" ? "-" : v) }' "$1"
}

# json_number FILE KEY prints a top-level number of a JSON report.
json_number() {
	sed -n "s/^  \"$2\": \\([-0-9.eE+]*\\),\\{0,1\\}\$/\\1/p" "$1"
}

# best prints the smallest of its numeric arguments, "-" when any is "-".
best() {
	printf '%s\n' "$@" | awk '
		$1 == "-" || $1 == "" { bad = 1 }
		NR == 1 || $1 + 0 < v { v = $1 + 0 }
		END { print (bad || NR == 0 ? "-" : v) }'
}

# most prints the largest of its numeric arguments, "-" when any is "-".
most() {
	printf '%s\n' "$@" | awk '
		$1 == "-" || $1 == "" { bad = 1 }
		NR == 1 || $1 + 0 > v { v = $1 + 0 }
		END { print (bad || NR == 0 ? "-" : v) }'
}

# scale VALUE FACTOR prints VALUE * FACTOR, or "-".
scale() {
	awk -v v="$1" -v f="$2" 'BEGIN { print (v == "-" ? "-" : sprintf("%.0f", v * f)) }'
}

# per_op_ns RATE ITEMS prints the ns per operation of ITEMS at RATE items/s.
per_op_ns() {
	awk -v r="$1" -v n="$2" 'BEGIN { print (r == "-" || r + 0 <= 0 ? "-" : sprintf("%.0f", n / r * 1e9)) }'
}

# measured OUT CMD... runs CMD with its standard output in OUT and sets
# wall_ns and peak_kib (from /usr/bin/time -v; "-" without it).
measured() {
	local out=$1 t0
	shift
	t0=$(date +%s%N)
	if [[ -x /usr/bin/time ]]; then
		/usr/bin/time -v -o "${out}.time" "$@" >"${out}"
		peak_kib=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "${out}.time")
	else
		"$@" >"${out}"
		peak_kib=-
	fi
	wall_ns=$(($(date +%s%N) - t0))
}

# --- peers

builds=(gonum)
if dpkg -s libopenblas-dev >/dev/null 2>&1; then
	builds+=(openblas)
else
	hints+=("OpenBLAS rows: apt-get install -y libopenblas-dev")
fi

torch_version=$("${python}" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [[ -z "${torch_version}" ]] && { selected train || selected memory; }; then
	hints+=("PyTorch columns: apt-get install -y python3-torch python3-torchvision (used through ${python})")
fi
torchvision=0
if [[ -n "${torch_version}" ]] && "${python}" -c 'import torchvision' 2>/dev/null; then
	torchvision=1
elif [[ -n "${torch_version}" ]] && selected memory; then
	hints+=("VGG16 PyTorch step: apt-get install -y python3-torchvision")
fi
onnx_version=$("${python}" -c 'import onnx; print(onnx.__version__)' 2>/dev/null || true)
if [[ -z "${onnx_version}" ]] && { selected read || selected rewrite; }; then
	hints+=("onnx columns: apt-get install -y python3-onnx (used through ${python})")
fi

# ONNX Runtime as internal/peer finds it: node on PATH, onnxruntime-node
# 1.30.0 under DCCONVERT_ORT_DIR or the repository's node_modules.
ort_modules="${DCCONVERT_ORT_DIR:-${repo}/node_modules}"
ort_found=""
if command -v node >/dev/null; then
	ort_found=$(node -e '
		const path = require("path");
		require(path.join(process.argv[1], "onnxruntime-node"));
		process.stdout.write(require(path.join(process.argv[1], "onnxruntime-node", "package.json")).version);' \
		"${ort_modules}" 2>/dev/null || true)
fi
ort=0
if [[ "${ort_found}" == "${ort_version}" ]]; then
	ort=1
elif selected eval; then
	hints+=("ONNX Runtime ${ort_version} column: install Node.js 20, then at the repository root run
    ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund   (as .ci/run does; found: ${ort_found:-none} in ${ort_modules})")
fi

# compile PACKAGE BUILD builds the package's test binary (the command's
# binary for cmd/dcconvert) with the BLAS build into bin[PACKAGE.BUILD].
declare -A bin=()
compile() {
	local out="${work}/$(basename "$1").$2" tags=() env=()
	if [[ "$2" == openblas ]]; then
		tags=(-tags openblas)
		env=(CGO_LDFLAGS=-lopenblas)
	fi
	if [[ "$1" == cmd/* ]]; then
		env "${env[@]}" go build "${tags[@]}" -o "${out}" "./$1"
	else
		out+=.test
		env "${env[@]}" go test -c "${tags[@]}" -o "${out}" "./$1"
	fi
	bin[$1.$2]="${out}"
}

echo "--- building" >&2
for build in "${builds[@]}"; do
	if selected train || selected memory; then
		compile finetune "${build}"
	fi
	if selected conv; then
		compile engine "${build}"
	fi
	if selected eval; then
		compile cmd/dcconvert "${build}"
	fi
done
if selected read; then
	compile onnximport gonum
fi
if selected eval || selected read || selected rewrite; then
	compile cmd/dcconvert gonum
fi

# --- train

# train NET SHAPE STEPS measures both variants of NET, SHAPE its input.
train() {
	local net=$1 shape=$2 steps=$3 variant build r out
	for variant in plain ball-learn; do
		local -A go_ns=()
		local torch_ns=()
		for ((r = 1; r <= rounds; r++)); do
			for build in "${builds[@]}"; do
				out="${work}/train.${net}.${variant}.${build}.${r}"
				"${bin[finetune.${build}]}" -test.run '^$' -test.bench "^BenchmarkTrainStep\$/^${net}\$/^${variant}\$" \
					-test.benchtime "${steps}x" >"${out}"
				go_ns[${build}]+=" $(bench_value "${out}" "BenchmarkTrainStep/${net}/${variant}" ns/op)"
			done
			if [[ -n "${torch_version}" ]]; then
				out="${work}/train.${net}.${variant}.torch.${r}"
				"${python}" bench/torch_peer.py train "${net}" "${variant}" "${steps}" >"${out}"
				torch_ns+=("$(key_value "${out}" ns)")
			fi
		done
		local peer=-
		if ((${#torch_ns[@]} > 0)); then
			peer=$(best "${torch_ns[@]}")
		fi
		for build in "${builds[@]}"; do
			# shellcheck disable=SC2086 # the figures are space-separated
			row "train step, ${net} ${shape}, ${variant}, ${build}" time "$(best ${go_ns[${build}]})" "${peer}" 64 img "PyTorch ${torch_version:-missing}"
		done
	done
}

if selected train; then
	echo "--- train: ${rounds} rounds of ${mini_steps} (vgg-mini) and ${vgg11_steps} (vgg11) steps" >&2
	train vgg-mini 1x28x28 "${mini_steps}"
	train vgg11 3x32x32 "${vgg11_steps}"
	notes+=("train: images/s = 64 / step time; a step's figure is the mean of a round's steps, after one untimed step")
fi

# --- conv

if selected conv; then
	echo "--- conv: ${conv_iters} iterations" >&2
	for build in "${builds[@]}"; do
		out="${work}/conv.${build}"
		"${bin[engine.${build}]}" -test.run '^$' -test.bench '^BenchmarkDecoupledConv$' -test.benchtime "${conv_iters}x" >"${out}"
		for cfg in linear-cos ball-learn-sigmoid-log; do
			name="BenchmarkDecoupledConv/${cfg}"
			row "decoupled conv (${cfg}) / Conv2d, fwd+bwd, ${build}" time \
				"$(scale "$(bench_value "${out}" "${name}" decoupled-ms/op)" 1e6)" \
				"$(scale "$(bench_value "${out}" "${name}" plain-ms/op)" 1e6)" 32 img "engine Conv2d"
		done
	done
	notes+=("conv: 64->64 3x3 pad 1, batch 32 of 32x32; both in the same loop, so that ratio is dcconvert's own")
fi

# --- eval

if selected eval; then
	echo "--- eval: ${rounds} rounds" >&2
	mini_data=synthetic
	if [[ -f "${fashion}/t10k-images-idx3-ubyte.gz" ]]; then
		mini_data="${fashion}"
	else
		hints+=("eval on Fashion-MNIST instead of the synthetic set: apt-get install -y dataset-fashion-mnist")
	fi
	"${bin[cmd/dcconvert.gonum]}" -q models vgg-mini -o "${work}/vgg-mini.onnx"
	"${bin[cmd/dcconvert.gonum]}" -q models vgg11 --input 3x32x32 --classes 10 -o "${work}/vgg11.onnx"
	# eval_model NAME DATA C H W
	eval_model() {
		local name=$1 data=$2 c=$3 h=$4 w=$5 build r report images=0 peer=-
		local -A infer=()
		local ort_rates=()
		for ((r = 1; r <= rounds; r++)); do
			for build in "${builds[@]}"; do
				report="${work}/eval.${name}.${build}.${r}.json"
				"${bin[cmd/dcconvert.${build}]}" -q eval "${work}/${name}.onnx" --data "${data}" --batch "${batch}" --json >"${report}"
				images=$(json_number "${report}" images)
				infer[${build}]+=" $(json_number "${report}" inference_images_per_second)"
			done
			if ((ort)); then
				ort_rates+=("$(node bench/ort_eval.js "${ort_modules}" "${work}/${name}.onnx" "${c}" "${h}" "${w}" \
					"${images}" "${batch}" "${threads}" "${ort_spin}")")
			fi
		done
		if ((${#ort_rates[@]} > 0)); then
			peer=$(per_op_ns "$(most "${ort_rates[@]}")" "${batch}")
		fi
		for build in "${builds[@]}"; do
			# shellcheck disable=SC2086 # the figures are space-separated
			row "eval ${name} ${c}x${h}x${w}, $(basename "${data}"), ${build}" time \
				"$(per_op_ns "$(most ${infer[${build}]})" "${batch}")" "${peer}" "${batch}" img "ONNX Runtime ${ort_found:-missing}"
		done
	}
	eval_model vgg-mini "${mini_data}" 1 28 28
	eval_model vgg11 synthetic 3 32 32
	notes+=("eval: time per batch of ${batch}, forward passes alone (dcconvert eval's inference figure; ONNX Runtime's session.run)")
fi

# --- VGG16: read, rewrite, memory

vgg16="${work}/vgg16.onnx"
if { selected read || selected rewrite; } && [[ ! -f "${vgg16}" ]]; then
	echo "--- writing ${vgg16}" >&2
	"${bin[cmd/dcconvert.gonum]}" -q models vgg16 -o "${vgg16}"
fi
vgg16_mb=0
if [[ -f "${vgg16}" ]]; then
	vgg16_mb=$(awk -v b="$(stat -c %s "${vgg16}")" 'BEGIN { printf "%.1f", b / 1048576 }')
fi
onnx_peer="ONNX (Python) ${onnx_version:-missing}"

if selected read; then
	echo "--- read" >&2
	out="${work}/read"
	env DCCONVERT_BENCH_MODEL="${vgg16}" "${bin[onnximport.gonum]}" -test.run '^$' -test.bench '^Benchmark(Read|Write)$' \
		-test.benchtime 5x >"${out}"
	peer_read=- peer_write=- peer_kib=-
	if [[ -n "${onnx_version}" ]]; then
		"${python}" bench/onnx_peer.py load "${vgg16}" 5 >"${out}.load"
		"${python}" bench/onnx_peer.py save "${vgg16}" "${work}/saved.onnx" 5 >"${out}.save"
		peer_read=$(key_value "${out}.load" ns)
		peer_write=$(key_value "${out}.save" ns)
		measured "${out}.pyrss" "${python}" -c 'import sys, onnx; onnx.load(sys.argv[1])' "${vgg16}"
		peer_kib=${peak_kib}
		rm -f "${work}/saved.onnx"
	fi
	row "VGG16 read + check + decode (${vgg16_mb} MiB)" time "$(bench_value "${out}" BenchmarkRead ns/op)" "${peer_read}" "${vgg16_mb}" MiB "${onnx_peer} onnx.load"
	row "VGG16 write" time "$(bench_value "${out}" BenchmarkWrite ns/op)" "${peer_write}" "${vgg16_mb}" MiB "${onnx_peer} onnx.save"
	measured "${out}.rss" env DCCONVERT_BENCH_MODEL="${vgg16}" "${bin[onnximport.gonum]}" -test.run '^$' -test.bench '^BenchmarkRead$' -test.benchtime 1x
	row "VGG16 one read, peak RSS of the process" memory "${peak_kib}" "${peer_kib}" 0 - "${onnx_peer} onnx.load"
	notes+=("read: mean of 5 in one process each (go test -bench 'Read|Write' ./onnximport; bench/onnx_peer.py)")
fi

if selected rewrite; then
	echo "--- rewrite: ${rounds} rounds" >&2
	dc_ns=() dc_kib=() py_ns=() py_kib=()
	for ((r = 1; r <= rounds; r++)); do
		measured "${work}/rewrite.${r}" "${bin[cmd/dcconvert.gonum]}" rewrite -q "${vgg16}" --mag ball --rho learn -o "${work}/vgg16.dc.onnx"
		dc_ns+=("${wall_ns}") dc_kib+=("${peak_kib}")
		if [[ -n "${onnx_version}" ]]; then
			measured "${work}/pysave.${r}" "${python}" -c 'import sys, onnx; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])' \
				"${vgg16}" "${work}/py.onnx"
			py_ns+=("${wall_ns}") py_kib+=("${peak_kib}")
		fi
	done
	rm -f "${work}/vgg16.dc.onnx" "${work}/py.onnx"
	row "VGG16 rewrite --mag ball --rho learn, read to write" time "$(best "${dc_ns[@]}")" "$(best "${py_ns[@]:--}")" \
		"${vgg16_mb}" MiB "${onnx_peer} load + save"
	row "VGG16 rewrite, peak RSS of the process" memory "$(best "${dc_kib[@]}")" "$(best "${py_kib[@]:--}")" 0 - \
		"${onnx_peer} load + save"
	notes+=("rewrite: whole processes (dcconvert rewrite; python3 -c onnx.save(onnx.load(...))), wall time")
fi

if selected memory; then
	build="${builds[-1]}"
	echo "--- memory: one VGG16 step at 3x224x224, batch 8, ${build}" >&2
	out="${work}/vgg16step"
	measured "${out}" "${bin[finetune.${build}]}" -test.run '^$' -test.bench '^BenchmarkVGG16Step$' -test.benchtime 1x
	step_kib=${peak_kib}
	if [[ "${step_kib}" == - ]]; then
		step_kib=$(scale "$(bench_value "${out}" BenchmarkVGG16Step peak-RSS-MiB)" 1024)
	fi
	torch_step_ns=- torch_step_kib=-
	if ((torchvision)); then
		measured "${out}.torch" "${python}" bench/torch_peer.py vgg16-step
		torch_step_ns=$(key_value "${out}.torch" ns)
		torch_step_kib=${peak_kib}
		if [[ "${torch_step_kib}" == - ]]; then
			torch_step_kib=$(key_value "${out}.torch" rss_kib)
		fi
	fi
	torch_peer="PyTorch ${torch_version:-missing} (torchvision)"
	row "VGG16 3x224x224 batch 8, first train step, ${build}" time \
		"$(bench_value "${out}" BenchmarkVGG16Step ns/op)" "${torch_step_ns}" 8 img "${torch_peer}"
	row "VGG16 train step, peak RSS of the process" memory "${step_kib}" "${torch_step_kib}" 0 - "${torch_peer}"
	notes+=("memory: peak RSS from $([[ -x /usr/bin/time ]] && echo '/usr/bin/time -v' || echo 'each process (VmHWM, ru_maxrss)'); it includes the model, optimiser state and, for PyTorch, the interpreter")
fi

# --- the table

echo
echo "dcconvert $(git -C "${repo}" describe --always --dirty 2>/dev/null || echo '?'), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null))"
echo "$(go env GOVERSION) with GOMAXPROCS=${GOMAXPROCS}; PyTorch ${torch_version:-missing} with torch.set_num_threads(${threads});" \
	"ONNX Runtime ${ort_found:-missing} with intraOpNumThreads ${threads}, allow_spinning ${ort_spin}; OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS} OMP_WAIT_POLICY=${OMP_WAIT_POLICY}"
echo "best of ${rounds} rounds alternating dcconvert and its peer; a shared machine: compare the ratios, not absolute times"
echo "dc/peer: dcconvert's time (or memory) over the peer's; above 1, dcconvert is slower (or uses more)"
echo
awk -F'\t' '
	function missing(v) { return v == "-" || v == "" }
	# value formats v in the unit that suits ref, the larger of its row.
	function value(v, kind, ref) {
		if (missing(v)) return "n/a"
		if (kind == "memory") return sprintf("%.0f MiB", v / 1024)
		if (ref < 1e7) return sprintf("%.2f ms", v / 1e6)
		if (ref < 1e10) return sprintf("%.1f ms", v / 1e6)
		return sprintf("%.2f s", v / 1e9)
	}
	function rate(v, kind, items, unit) {
		if (kind != "time" || missing(v) || v + 0 <= 0 || items + 0 <= 0) return "-"
		r = items / (v / 1e9)
		return sprintf(r < 100 ? "%.2f %s/s" : "%.0f %s/s", r, unit)
	}
	{
		n++
		ref = missing($4) || $3 + 0 > $4 + 0 ? $3 : $4
		name[n] = $1
		dc[n] = value($3, $2, ref)
		peer[n] = value($4, $2, ref)
		ratio[n] = missing($3) || missing($4) || $4 + 0 == 0 ? "-" : sprintf("%.2fx", $3 / $4)
		dcr[n] = rate($3, $2, $5, $6)
		peerr[n] = rate($4, $2, $5, $6)
		who[n] = $7
		if (length($1) > w) w = length($1)
	}
	END {
		f = "%-" w "s  %10s  %10s  %8s  %14s  %14s  %s\n"
		printf f, "workload", "dcconvert", "peer", "dc/peer", "dcconvert rate", "peer rate", "peer"
		for (i = 1; i <= n; i++) printf f, name[i], dc[i], peer[i], ratio[i], dcr[i], peerr[i], who[i]
	}' "${rows}"
echo
for n in "${notes[@]}"; do
	echo "${n}"
done
if ((${#hints[@]} > 0)); then
	echo
	echo "missing peers (their columns show n/a):"
	for h in "${hints[@]}"; do
		echo "  ${h}"
	done
fi
