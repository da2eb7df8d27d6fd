#!/usr/bin/env bash
# One prepared GPU check (the `device` tool's machine: python3 holds CUDA torch; the
# packages it lacks travel as wheels in .whl, see bench/README or the device notes).
# Writes logs and JSON under $OUT. Each step has its own time limit so one slow step
# cannot eat the rest.   usage: bash bench/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/engine:$PWD/src PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
# STEPS="cuda_tests demo" runs only those steps (default: all)
step() { local limit=$1 name=$2; shift 2
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return; fi
  echo "=== $name"; local t0=$(date +%s.%N)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "rc=$rc wall=$(python3 -c "print(round($(date +%s.%N)-$t0,1))")s"; tail -n 6 "$OUT/$name.log"; }
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
step 200 cuda_tests python3 -m pytest -q -p no:cacheprovider -k "cuda" tests/test_fast_engine.py tests/test_training.py tests/test_train_resume.py tests/test_job_resume.py
step 60 lockstep python3 bench/lockstep.py --device cuda --models 7 --repeats 20 --out "$OUT/lockstep.json"
step 80 tp_fp32 python3 bench/throughput.py --device cuda --images 20000 --epochs 2 --workers 8 --out "$OUT/tp_fp32.json"
step 80 tp_bf16 python3 bench/throughput.py --device cuda --images 20000 --epochs 2 --workers 8 --set 'run.precision="bf16"' --set 'run.channels_last="on"' --out "$OUT/tp_bf16.json"
step 60 demo python3 -m lotto_tui --batch --preset demo --device cuda --store /tmp/demo1
step 60 demo_p3 python3 -m lotto_tui --batch --preset demo --device cuda --set run.parallel=3 --store /tmp/demo3
