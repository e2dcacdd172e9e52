#!/usr/bin/env bash
# The accelerator-speed check (attention paths, batch 128, Llama) in about 6 minutes on one GPU.
# Rows, most important first; a row that would start after DEADLINE_S seconds is skipped:
#   new     T5-base E2URec step, bf16, batch 64 + 64, 256 tokens, model dropout 0.1 (residual,
#           feed-forward, adapter), attention dropout 0, cuDNN fused attention (XLA if cuDNN fails
#           the probe below), dropout_seeds=key, no remat
#   old     the same with the original path (attention='einsum', attention dropout 0.1), beside
#           the PyTorch reference (fp32 eager, batch 64 + 64) run once
#   new128  'new' at batch 128 + 128, its peak memory (no reference beside it)
#   llama   Llama-135M E2URec step, batch 64, the new path (remat with policy 'dots')
#   attn01  'new' with attention dropout 0.1 kept (materialised bf16 probabilities, no fused kernel)
# Then a table and SUMMARY_DIR/summary.json (every row's bench.json fields, the speed-ups over
# the reference, the probe's result). Each bench row compiles cold (no persistent cache).
#   SUMMARY_DIR=runs/gpu_bench_attention bash benchmarks/gpu_bench_attention.sh
# SMOKE=1 DEADLINE_S=3000 runs the same rows at tiny shapes (a CPU check of the script).
# It runs with the machine's python3 and its packages (jax with CUDA, flax, optax, orbax,
# transformers, torch, peft). Offline, with ml-collections missing, put its wheel in .whl/ first
# (pip download --no-deps --only-binary=:all: -d .whl ml-collections==1.1.0): the script
# installs .whl/*.whl into /tmp/site when ml_collections does not import.
set -uo pipefail
cd "$(dirname "$0")/.."
summary="${SUMMARY_DIR:-runs/gpu_bench_attention}"
work="${WORK_DIR:-/tmp/gpu_bench_attention}"
deadline="${DEADLINE_S:-300}"
mkdir -p "$summary" "$work"
export PYTHONUNBUFFERED=1
start=$(date +%s)
if ! python3 -c 'import ml_collections' 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  python3 -c 'import ml_collections' || { echo 'ml_collections is missing: carry its wheel in .whl/'; exit 2; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# Probe: cuDNN attention with T5-base's encoder shapes (bias, key lengths), forward and backward.
attn=cudnn
if ! timeout 60 python3 - <<'PY'
import jax, jax.numpy as jnp
from e2urec_jax.models import attention as attn
print('jax', jax.__version__, jax.devices())
k = jax.random.split(jax.random.key(0), 4)
q, key, v = (jax.random.normal(k[i], (4, 256, 12, 64), jnp.bfloat16) for i in range(3))
bias = jax.random.normal(k[3], (1, 12, 256, 256), jnp.float32)
key_mask = jnp.arange(256)[None] < jnp.array([256, 200, 17, 1])[:, None]
if not attn.cudnn_supported(q, key, bias):
  raise SystemExit(f'PROBE: cudnn_supported is False on {jax.default_backend()}')
def loss(q, key, v, impl):
  return jnp.sum(attn.attention(q, key, v, bias=bias, key_mask=key_mask, scale=1.0, implementation=impl)
                 .astype(jnp.float32) ** 2)
grad = jax.jit(jax.value_and_grad(loss, (0, 1, 2)), static_argnums=3)
(lc, gc), (lx, gx) = grad(q, key, v, 'cudnn'), grad(q, key, v, 'xla')
rel = max(float(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)).max() / jnp.abs(b.astype(jnp.float32)).max())
          for a, b in zip(gc, gx))
print(f'PROBE cudnn ok: loss {float(lc):.4g} vs xla {float(lx):.4g}, max relative grad diff {rel:.3g}')
PY
then
  attn=xla
  echo 'PROBE cudnn failed: the new-path rows run attention=xla'
fi
echo "$attn" > "$work/attention"

row() {  # row NAME TIMEOUT_S CONFIG_ARGS
  local now=$(( $(date +%s) - start ))
  if (( now > deadline )); then echo "== $1: skipped (${now}s > DEADLINE_S=${deadline})"; return; fi
  echo "== $1 (${now}s): $3"
  rm -rf "$work/$1"
  timeout "$2" python3 -m e2urec_jax bench --config="configs/bench.py:$3" --workdir="$work/$1" \
    --config.jax_cache_dir=
  echo "== $1 exit $?"
}
common="steps=10,warmup=2,what=e2urec_step"
t5=base; llama=llama135m; b64=64; b128=128; scale=1
if [[ "${SMOKE:-0}" == 1 ]]; then  # a CPU check of this script: tiny shapes, generous timeouts
  t5=tiny; b64=2; b128=4; scale=6; common="steps=1,warmup=1,seq=32,reference_steps=1,what=e2urec_step,scan_unroll=1"
fi
row new $((75 * scale)) "size=$t5,batch=$b64,reference=false,attention=$attn,attention_dropout=0.0,dropout_seeds=key,$common"
row old $((110 * scale)) "size=$t5,batch=$b64,reference_steps=3,$common"
row new128 $((80 * scale)) "size=$t5,batch=$b128,reference=false,attention=$attn,attention_dropout=0.0,dropout_seeds=key,$common"
row llama $((70 * scale)) "size=$llama,batch=$b64,reference=false,attention=$attn,remat=true,remat_policy=dots,dropout_seeds=key,$common"
row attn01 $((70 * scale)) "size=$t5,batch=$b64,reference=false,attention=$attn,dropout_seeds=key,$common"

python3 - "$work" "$summary" <<'PY'
import json, os, sys
work, summary = sys.argv[1:]
rows, reference = [], None
for name in ('new', 'old', 'new128', 'llama', 'attn01'):
  path = os.path.join(work, name, 'bench.json')
  if not os.path.exists(path):
    rows.append({'row': name, 'missing': True})
    continue
  result = json.load(open(path))
  for r in result['results']:
    r = dict(r, row=name if r['name'] == 'e2urec_step' else 'reference')
    if r['name'] == 'reference_e2urec_step':
      reference = r
    rows.append(r)
  env = result.get('env')
ref_eps = reference and reference.get('examples_per_s')
print(f'{"row":10s} {"size":9s} {"batch":>5s} {"ex/s":>8s} {"ms/step":>8s} {"compile s":>9s} {"peak GB":>8s} {"MFU":>6s} {"x ref":>6s}')
for r in rows:
  if r.get('missing'):
    print(f'{r["row"]:10s} (no result)')
    continue
  speedup = r['examples_per_s'] / ref_eps if ref_eps and r['row'] != 'reference' else None
  r['speedup_vs_reference'] = speedup
  fmt = lambda v, f: '-' if v is None else format(v, f)
  print(f'{r["row"]:10s} {r["size"]:9s} {r["batch"]:5d} {r["examples_per_s"]:8.1f} {r["ms_per_step"]:8.1f} '
        f'{fmt(r.get("compile_s"), "9.1f"):>9s} {fmt(r.get("peak_memory_bytes") and r["peak_memory_bytes"] / 1e9, "8.1f"):>8s} '
        f'{fmt(r.get("mfu") and 100 * r["mfu"], "5.1f"):>5s}% {fmt(speedup, "6.2f"):>6s}')
attention = open(os.path.join(work, 'attention')).read().strip()
out = {'rows': rows, 'attention_used': attention, 'reference_examples_per_s': ref_eps,
       'env': locals().get('env')}
json.dump(out, open(os.path.join(summary, 'summary.json'), 'w'), indent=1)
print('SUMMARY ' + json.dumps({r.get('row'): {k: r.get(k) for k in ('examples_per_s', 'compile_s', 'peak_memory_bytes',
                                                                      'mfu', 'speedup_vs_reference')} for r in rows}))
PY
echo "total $(( $(date +%s) - start ))s"
