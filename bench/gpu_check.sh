#!/usr/bin/env bash
# The one prepared GPU check (issue 14): everything a GPU session should run, in under
# 8 minutes, each step with its own time limit inside one overall budget, so one slow
# step cannot eat the rest:
#   cuda_tests      pytest -k cuda on the engine's CUDA tests
#   lockstep_tests  tests/test_lockstep.py
#   check           captured vs eager vs lockstep correctness (bench/lockstep_check.py)
#   bench           the grid benchmark (bench/grid_speed.py, --models 1,3,6,18)
#   det_off         the engine rows of the benchmark again with run.deterministic = false
#                   (what deterministic mode costs on this GPU)
#   seed_on, seed_auto   the real `python -m lotto_tui --batch --preset seed-paper` on a
#                   CIFAR-10 folder in the real format (synthetic pixels) written first,
#                   with run.lockstep = on, then auto; timed (bench/timed_run.py: wall,
#                   peak RSS, and the run's own peak-memory line)
# Logs and JSON go to $OUT (default /tmp/gpu_check); data and stores to a temporary folder.
#
#   bash bench/gpu_check.sh                     # on the GPU box (the `device` tool), with .whl carried
#   DEVICE=cpu OUT=$(mktemp -d) bash bench/gpu_check.sh   # dry run on CPU: tiny sizes, no wheels
# STEPS="check bench" runs only those steps; BUDGET (seconds, default 470) caps the whole.
set -u
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu_check}
BUDGET=${BUDGET:-470}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 1  # the repository root, wherever it is run from
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_work.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)

if [ "$DEVICE" = cpu ]; then
  PY=${PY:-$PWD/.venv/bin/python}  # this checkout's venv (README's setup)
else
  PY=${PY:-python3}
  if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
  fi
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/engine:$PWD/src PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0

# step LIMIT NAME COMMAND...: run it (output to $OUT/NAME.log) unless STEPS leaves it
# out or the budget is spent; the limit is cut to what the budget has left
step() { local limit=$1 name=$2; shift 2
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return; fi
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt 15 ]; then echo "=== $name: skipped, ${left}s of the ${BUDGET}s budget left"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s)"; local t0; t0=$(date +%s.%N)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "rc=$rc wall=$("$PY" -c "print(round($(date +%s.%N)-$t0,1))")s$([ $rc = 124 ] && echo ' (time limit)')"
  tail -n 8 "$OUT/$name.log"; }

PYTEST=("$PY" -m pytest -q -rs -p no:cacheprovider -o addopts=)
SEED=("$PY" bench/timed_run.py)
SEED_ARGS=(-m lotto_tui --batch --preset seed-paper --device "$DEVICE" --set "data.root=\"$WORK/data\"" --set data.download=false)
if [ "$DEVICE" = cpu ]; then  # the dry run: tiny sizes, the same steps
  CHECK=(--images 256 --models 3)
  BENCH=(--images 512 --val-images 128 --test-images 256 --epochs 1 --models 1,3 --workers 2)
  SEED_ARGS+=(--set train.dense_epochs=1 --set train.pruned_epochs=1 --set data.subset=1000 --set data.val_size=500
              --set "grid.sparsities=[0.5]" --set model.width=8 --set model.hidden=32)
  LIMITS=(120 240 120 240 240 240 120)
  FAST=(--images 512 --val-images 128 --test-images 256 --epochs 1 --models 3)
else
  CHECK=(--images 4096 --models 6)
  BENCH=(--images 10000 --val-images 5000 --test-images 10000 --epochs 1 --models 1,3,6,18 --workers 8)
  LIMITS=(120 60 60 150 120 120 60)
  FAST=(--images 10000 --val-images 5000 --test-images 10000 --epochs 1 --models 6)
fi

echo "gpu_check: DEVICE=$DEVICE OUT=$OUT budget ${BUDGET}s $(date -u +%FT%TZ)"
nvidia-smi -L 2>/dev/null || true
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
"$PY" bench/cifar_folder.py "$WORK/data" > /dev/null || exit 1

step "${LIMITS[0]}" cuda_tests "${PYTEST[@]}" -k cuda tests/test_fast_engine.py tests/test_training.py \
  tests/test_train_resume.py tests/test_job_resume.py tests/test_pruning_methods.py
step "${LIMITS[1]}" lockstep_tests "${PYTEST[@]}" tests/test_lockstep.py
step "${LIMITS[2]}" check "$PY" bench/lockstep_check.py --device "$DEVICE" "${CHECK[@]}" --out "$OUT/check.json"
step "${LIMITS[3]}" bench "$PY" bench/grid_speed.py --device "$DEVICE" "${BENCH[@]}" --cifar-root "$WORK/data" \
  --out "$OUT/bench.json"
step "${LIMITS[4]}" seed_on "${SEED[@]}" --log "$OUT/seed_on.run.log" --out "$OUT/seed_on.json" -- \
  "$PY" "${SEED_ARGS[@]}" --store "$WORK/store_on" --set 'run.lockstep="on"'
step "${LIMITS[6]}" det_off "$PY" bench/grid_speed.py --device "$DEVICE" "${FAST[@]}" --no-typical --no-data-load \
  --nondeterministic --out "$OUT/det_off.json"
step "${LIMITS[5]}" seed_auto "${SEED[@]}" --log "$OUT/seed_auto.run.log" --out "$OUT/seed_auto.json" -- \
  "$PY" "${SEED_ARGS[@]}" --store "$WORK/store_auto" --set 'run.lockstep="auto"'
echo "gpu_check: done in $(( $(date +%s) - START ))s"
