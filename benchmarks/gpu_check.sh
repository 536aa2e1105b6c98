#!/usr/bin/env bash
# One command that proves the GPU path on one GPU (sized for an H200 in about 9 minutes of device time):
#   1. the CUDA tests (fla-core, bf16, CUDA graphs of the static decoding cache, FSDP through accelerate);
#   2. every row of benchmarks/bench_gpu.py (training, rolling scoring, generate_until, the memory op);
#   3. the GPU quickstart with a shortened training budget, evaluated at 1x-64x its finetuning length;
#   4. RESULTS_gpu.md: every target beside the previous run's figure and this run's (benchmarks/gpu_targets.py).
#
# Prepare on a machine that reaches PyPI:   bash benchmarks/make_wheelhouse.sh      (fills .whl/)
# Run on the GPU machine, from the project root (with .whl/ carried there):
#   OUT=/some/dir bash benchmarks/gpu_check.sh [--minutes M]
# Writes under $OUT (default ./gpu_check_out) seven files (the device tool brings back at most eight):
# RESULTS_gpu.md, bench_gpu.json, profile.md (where a training step's time goes), quickstart_summary.json and the
# logs pytest.log, bench.log, quickstart.log. A step that fails or runs out of time is reported; the rest still run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
MINUTES=2
[ "${1:-}" = "--minutes" ] && MINUTES=$2
WORK=/tmp/gpu_check
mkdir -p "$OUT" "$WORK"
began=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - began ))s] $*"; }

if ! python3 -c "import infini_bench" 2>/dev/null; then
  say "installing from .whl/"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { say "install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
# tests/conftest.py hides CUDA unless CUDA_VISIBLE_DEVICES is set: the CUDA tests must see the device here
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true \
  CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" \
  > "$WORK/device.txt" 2>&1 || { say "no CUDA device: $(cat "$WORK/device.txt")"; exit 1; }

say "1/4 CUDA tests"
cuda_tests=$(ls tests/test_parallel_form.py tests/test_model.py tests/test_local_attention_and_tokenizer.py \
  tests/test_static_cache*.py tests/test_train_fsdp.py 2>/dev/null)
timeout 150 python3 -m pytest -q -p no:cacheprovider $cuda_tests > "$OUT/pytest.log" 2>&1
say "   $(tail -n 1 "$OUT/pytest.log")"

say "2/4 bench_gpu.py"
timeout 270 python3 benchmarks/bench_gpu.py --out "$WORK/bench_gpu.md" --json "$OUT/bench_gpu.json" > "$OUT/bench.log" 2>&1
say "   exit $? ($(grep -c '^{' "$OUT/bench.log") rows)"

say "   profile of a training step (benchmarks/profile_memory_path.py)"
timeout 90 python3 benchmarks/profile_memory_path.py --out "$OUT/profile.md" > /dev/null 2>> "$OUT/bench.log"
say "   exit $?"

say "3/4 GPU quickstart, $MINUTES-minute training budget"
timeout 230 python3 -m infini_bench.cli quickstart --out /tmp/gpu_quickstart --minutes "$MINUTES" --samples 1 \
  > "$OUT/quickstart.log" 2>&1
say "   exit $?"
cp /tmp/gpu_quickstart/report/summary.json "$OUT/quickstart_summary.json" 2>/dev/null

say "4/4 RESULTS_gpu.md"
header="# GPU check: $(cat "$WORK/device.txt"), $(date -u +%Y-%m-%d), commit $(cat COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)

Command: \`OUT=... bash benchmarks/gpu_check.sh --minutes $MINUTES\` ($(( $(date +%s) - began )) s before this page). The
quickstart ran with a $MINUTES-minute training budget (its targets are for 10 minutes) and 1 sample per depth."
[ -f "$OUT/bench_gpu.json" ] || echo '{"errors": {"bench_gpu.py": "no output (see bench.log)"}}' > "$OUT/bench_gpu.json"
[ -f "$WORK/bench_gpu.md" ] || echo "(bench_gpu.py wrote no tables)" > "$WORK/bench_gpu.md"
python3 benchmarks/gpu_targets.py --bench "$OUT/bench_gpu.json" --bench-md "$WORK/bench_gpu.md" --tests "$OUT/pytest.log" \
  --quickstart "$OUT/quickstart_summary.json" --header "$header" --out "$OUT/RESULTS_gpu.md" > /dev/null
say "done: $OUT/RESULTS_gpu.md"
