#!/usr/bin/env bash
# The GPU benchmark as one script: T5-base at batch 64 (the speed targets, with the PyTorch
# reference beside it), then the ~135M Llama and T5-small without it. Tables go to stdout,
# each bench.json under OUT_DIR/<size>/.
#   OUT_DIR=runs/gpu_bench bash benchmarks/gpu_bench.sh
set -uo pipefail
out="${OUT_DIR:-runs/gpu_bench}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 - <<'PY'
import importlib.metadata as m
import jax
names = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'transformers', 'torch', 'peft')
versions = []
for n in names:
  try:
    versions.append(f'{n} {m.version(n)}')
  except m.PackageNotFoundError:
    versions.append(f'{n} -')
print(', '.join(versions))
print('devices:', jax.devices())
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
bench() {  # bench NAME TIMEOUT_S CONFIG_ARGS
  echo "== $1: $3"
  timeout "$2" python3 -m e2urec_jax bench --config="configs/bench.py:$3" --workdir="$out/$1"
  echo "== $1 exit $?"
}
bench base 300 size=base,batch=64
bench llama135m 130 size=llama135m,batch=64,reference=false,remat=true
bench small 80 size=small,batch=64,reference=false
