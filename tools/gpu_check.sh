#!/usr/bin/env bash
# Every check of the project that needs a GPU, in one command, with one report.
#
#     bash tools/gpu_check.sh            # about 8 minutes on one H200; writes gpu_check/report.md
#     bash tools/gpu_check.sh OUT_DIR    # the report and every log go to OUT_DIR instead
#
# Run from the repository root on a machine with CUDA, after `python3 -m pip install -e ".[dev]"`
# (a CUDA build of torch). Each check runs with a time limit and its result is recorded whatever
# it is, so one failure does not hide the others; the script exits non-zero if any check failed.
#   1. the machine: nvidia-smi, torch and CUDA versions
#   2. the CUDA tests of tests/test_devices.py (skipped on a CPU)
#   3. bench/shakespeare.py --skip-training: ms/step, tokens/s and MFU of the full config, eager
#      and compiled, diffusion and its AR twin (bf16 where the GPU has it)
#   4. deterministic mode: the same short run twice, the same figures to the last digit
#   5. the full config with both models (train.py --dataset shakespeare --both), then
#      bench/sampling.py on its checkpoints (2,000 characters per sampler)
#   6. block diffusion on the full config, briefly (train.py --block 16)
#   7. torchrun on every GPU present: a short run, beside the same run in one process
set -u
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check}
mkdir -p "$OUT"
REPORT="$OUT/report.md"
FAILED=0
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

check() {  # check NAME SECONDS COMMAND...: run it with a time limit, log it, add its tail to the report
  local name=$1 limit=$2; shift 2
  local log="$OUT/$name.log" start=$SECONDS
  echo "== $name: $*"
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && FAILED=1
  {
    echo "## $name"
    echo
    echo "\`$*\`: exit $rc in $((SECONDS - start)) s (limit $limit s); the last lines of $log:"
    echo
    echo '```'
    tail -n 25 "$log"
    echo '```'
    echo
  } >> "$REPORT"
  return $rc
}

{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $NGPU GPU(s)"
  echo
} > "$REPORT"

check machine 60 bash -c "nvidia-smi; python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'"
check cuda_tests 300 python3 -m pytest -q tests/test_devices.py -k "cuda"
check speed 300 python3 torch_version/bench/shakespeare.py --skip-training --timing-iters 100

# deterministic mode: the same seed twice gives the same figures (train.py turns it on by default)
SHORT="--dataset shakespeare --max-iters 200 --eval-interval 100 --final-draws 4 --samples 0 --quiet"
check deterministic 300 bash -c "python3 torch_version/train.py $SHORT --out $OUT/det_a | tail -1 > $OUT/det_a.txt &&
  python3 torch_version/train.py $SHORT --out $OUT/det_b | tail -1 > $OUT/det_b.txt &&
  cat $OUT/det_a.txt $OUT/det_b.txt && diff <(sed 's/trained in [0-9.]* s//' $OUT/det_a.txt) <(sed 's/trained in [0-9.]* s//' $OUT/det_b.txt) && echo 'same figures'"

check full_config 900 python3 torch_version/train.py --dataset shakespeare --both --samples 0 --out "$OUT/full"
check sampling 600 python3 torch_version/bench/sampling.py --ckpt "$OUT/full/ckpt.pt" --ckpt-ar "$OUT/full/ckpt_ar.pt" \
  --samples 2 --steps 16,64 --taus 0.9 --out "$OUT/full"
check block_diffusion 300 python3 torch_version/train.py --dataset shakespeare --block 16 --max-iters 500 \
  --eval-interval 250 --samples 0 --out "$OUT/block"

if [ "$NGPU" -ge 1 ]; then
  check torchrun 600 bash -c "python3 torch_version/train.py $SHORT --out $OUT/one | tail -1 &&
    torchrun --standalone --nproc_per_node=$NGPU torch_version/train.py $SHORT --out $OUT/many | tail -1"
fi

echo "report: $REPORT"
exit $FAILED
