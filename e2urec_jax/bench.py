"""`bench`: examples/s, tokens/s, ms/step, compile time, peak memory and MFU of our steps, beside
the PyTorch reference (benchmarks/torch_reference.py) run as a subprocess on the same machine.

A method's step is timed when its spec declares how (MethodSpec.bench, a BenchStep: its loss, its
frozen inputs, its FLOPs in forward passes, its PyTorch reference); its row is '<method>_step'.
An example is one sample: an E2URec step on `batch` retain and `batch` forget samples processes
2 x batch examples. FLOPs per step (for MFU) = the step's forward passes (E2URec: 3 x its student's
2 x batch samples, forward + backward, + three teacher forwards of `batch` samples) x one sample's
forward FLOPs, `models.forward_flops` counting matmul FLOPs (attention included, LM head at the
answer positions).
MFU divides by the bf16 matmul rate measured on the same device (a large matmul), not a datasheet.
"""
import collections
import glob
import importlib.util
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from jax.profiler import ProfileData
import numpy as np

from e2urec_jax import names, runtime
from e2urec_jax.errors import UserError
from e2urec_jax.eval.report import env_info
from e2urec_jax.methods.common import ce_loss_fn
from e2urec_jax.methods import spec as method_spec
from e2urec_jax.models import answer_logits, forward_flops, init_params, lora, model_from_hf_config, model_options
from e2urec_jax.train import mesh as mesh_lib, steps
from e2urec_jax.train.context import peak_memory_bytes

ANSWER_LEN = 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hf_config(size: str, vocab: int, dropout: float = 0.1):
  """The transformers config of a `bench` size (names.BENCH_SIZES); `vocab` > 0 replaces its vocabulary."""
  import transformers  # heavy: transformers loads torch
  if size not in names.BENCH_SIZES:
    raise UserError(f'config.bench.size={size!r}: use one of {", ".join(names.BENCH_SIZES)}')
  family, fields = names.BENCH_SIZES[size]
  fields = {k: dropout if v is names.MODEL_DROPOUT else v for k, v in fields.items()}
  if vocab:
    fields['vocab_size'] = vocab
  return getattr(transformers, names.FAMILIES[family].config_class)(**fields)


def random_batch(family: str, batch: int, seq: int, vocab: int, rng) -> dict:
  """A host batch of `batch` full-length prompts and 3-token answers (no padding, as the reference),
  laid out as the family reads a sample (names.FAMILIES' layout)."""
  answer = rng.integers(3, vocab, (batch, ANSWER_LEN)).astype(np.int32)
  if names.family(family).layout == names.ENCODER_DECODER:
    return {'input_ids': rng.integers(3, vocab, (batch, seq)).astype(np.int32),
            'attention_mask': np.ones((batch, seq), np.int32),
            'decoder_input_ids': np.concatenate([np.zeros((batch, 1), np.int32), answer[:, :-1]], 1),
            'answer_positions': np.tile(np.arange(ANSWER_LEN, dtype=np.int32), (batch, 1)),
            'answer_labels': answer, 'answer_mask': np.ones((batch, ANSWER_LEN), np.float32),
            'label': np.ones(batch, np.int32)}
  total = seq + ANSWER_LEN - 1
  ids = rng.integers(3, vocab, (batch, total)).astype(np.int32)
  ids[:, seq:] = answer[:, :-1]
  return {'input_ids': ids, 'attention_mask': np.ones((batch, total), np.int32),
          'answer_positions': np.tile(np.arange(seq - 1, seq - 1 + ANSWER_LEN, dtype=np.int32), (batch, 1)),
          'answer_labels': answer, 'answer_mask': np.ones((batch, ANSWER_LEN), np.float32),
          'label': np.ones(batch, np.int32)}


STEP_SUFFIX, REFERENCE_PREFIX = '_step', 'reference_'


def step_name(method: str) -> str:
  """The bench row (and config.bench.what name) of a method's step: 'e2urec_step'."""
  return method + STEP_SUFFIX


def method_steps(what) -> list:
  """The specs whose step `what` names ('<method>_step'), in registration order."""
  return [s for s in method_spec.specs() if s.bench is not None and step_name(s.name) in what]


def matmul_rate() -> float | None:
  """Measured bf16 matmul FLOP/s of the first device (None on CPU, where MFU is not reported)."""
  if jax.default_backend() == 'cpu':
    return None
  n = 8192
  a = jnp.ones((n, n), jnp.bfloat16)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(10):
    out = f(a)
  out.block_until_ready()
  return 10 * 2 * n ** 3 / (time.perf_counter() - start)


def _time(fn, args_for_step, steps_: int, warmup: int):
  """(ms per step, compile seconds): compile AOT, run warm-up, then time `steps_` steps."""
  start = time.perf_counter()
  compiled = fn.lower(*args_for_step(0)).compile()
  compile_s = time.perf_counter() - start
  out = None
  for i in range(warmup):
    out = compiled(*args_for_step(i))
  jax.block_until_ready(out)
  start = time.perf_counter()
  for i in range(steps_):
    out = compiled(*args_for_step(warmup + i))
  jax.block_until_ready(out)
  return 1000 * (time.perf_counter() - start) / steps_, compile_s


def bench_ours(config) -> list[dict]:
  b = config.bench
  dtype = b.dtype if b.dtype != 'auto' else ('float32' if jax.default_backend() == 'cpu' else 'bfloat16')
  cfg = hf_config(b.size, b.vocab, config.model.dropout)
  model = lora.configure(model_from_hf_config(cfg, dtype=dtype, **model_options(config.model)),
                         r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout)
  mesh = mesh_lib.make_mesh()
  params = mesh_lib.put_replicated(init_params(model, jax.random.key(0)), mesh)
  targets = lora.default_targets(model.family)
  adapters = lora.init_adapters(params, jax.random.key(1), config.lora.r, targets)
  zero = jax.tree.map(jnp.zeros_like, adapters)
  vocab = model.arch.vocab_size
  rng = np.random.default_rng(0)
  pool = [random_batch(model.family, b.batch, b.seq, vocab, rng) for _ in range(4)]
  put = lambda host: mesh_lib.put_batch(host, mesh)
  tokens = b.seq + ANSWER_LEN
  decoder = ANSWER_LEN if names.family(model.family).layout == names.ENCODER_DECODER else 0
  per_example = forward_flops(model, b.seq if decoder else b.seq + ANSWER_LEN - 1, decoder, head_positions=ANSWER_LEN)
  rate = matmul_rate()
  rows = []
  hp = {'lr': jnp.float32(1e-3), 'weight_decay': jnp.float32(0.0)}

  def record(name, ms, compile_s, examples, flops):
    rows.append({'name': name, 'size': b.size, 'batch': b.batch, 'seq': b.seq, 'ms_per_step': ms,
                 'examples_per_s': examples / (ms / 1000), 'tokens_per_s': examples * tokens / (ms / 1000),
                 'compile_s': compile_s, 'peak_memory_bytes': peak_memory_bytes(),
                 'mfu': None if rate is None else flops / (ms / 1000) / rate, 'flops_per_step': flops})

  what = b.what.replace('+', ',').split(',')
  for spec in method_steps(what):  # each method's step, declared by its spec (MethodSpec.bench)
    bench = spec.bench
    if spec.trainable == 'lora':
      trainable = adapters
      frozen = mesh_lib.put_replicated(bench.frozen(params, adapters, zero), mesh)
    else:  # every weight, in float32 as a run trains them
      trainable = jax.tree.map(lambda x: x.astype(jnp.float32), params)
      frozen = mesh_lib.put_replicated(bench.frozen(params, None, zero), mesh)
    step = steps.make_train_step(bench.loss(model), mesh).jitted
    state = [mesh_lib.put_replicated(jax.tree.map(jnp.copy, trainable), mesh),
             mesh_lib.put_replicated(steps.init_opt_state(trainable), mesh)]
    if bench.paired:
      batches = [put({'retain': pool[i], 'forget': pool[(i + 1) % 4]}) for i in range(4)]
    else:
      batches = [put(p) for p in pool]
    step_hp = {**hp, **{k: jnp.float32(v) for k, v in bench.hparams.items()}}

    def args(i, state=state, frozen=frozen, batches=batches, step_hp=step_hp):  # donated state threads through
      return (state[0], state[1], frozen, batches[i % 4], jax.random.key(i), step_hp)
    ms, comp = _time_stateful(step, args, state, b.steps, b.warmup, trace_dir=b.profile)
    examples = (2 if bench.paired else 1) * b.batch
    record(step_name(spec.name), ms, comp, examples, bench.forward_passes * b.batch * per_example)
  if 'train_step' in what:
    step = steps.make_train_step(ce_loss_fn(model, 'full'), mesh).jitted
    full = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    state = [mesh_lib.put_replicated(jax.tree.map(jnp.copy, full), mesh),
             mesh_lib.put_replicated(steps.init_opt_state(full), mesh)]
    batches = [put(p) for p in pool]
    args = lambda i: (state[0], state[1], {}, batches[i % 4], jax.random.key(i), hp)
    ms, comp = _time_stateful(step, args, state, b.steps, b.warmup)
    record('train_step', ms, comp, b.batch, 3 * b.batch * per_example)
  if 'eval' in what:
    rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
    fn = jax.jit(lambda p, a, batch: answer_logits(model, p, batch, adapters=a), in_shardings=(rep, rep, data))
    batches = [put(p) for p in pool]
    ms, comp = _time(fn, lambda i: (params, zero, batches[i % 4]), b.steps, b.warmup)
    record('eval', ms, comp, b.batch, b.batch * per_example)
  return rows


def _time_stateful(step, args, state, steps_: int, warmup: int, trace_dir: str = ''):
  """Like _time, for a step that donates (trainable, opt_state): each output feeds the next call.
  With `trace_dir`, 3 more steps run under the profiler and their device time is summarised."""
  start = time.perf_counter()
  compiled = step.lower(*args(0)).compile()
  compile_s = time.perf_counter() - start
  for i in range(warmup + steps_):
    if i == warmup:
      jax.block_until_ready(state)
      start = time.perf_counter()
    state[0], state[1], metrics = compiled(*args(i))
  jax.block_until_ready(metrics)
  ms = 1000 * (time.perf_counter() - start) / steps_
  if trace_dir:
    with jax.profiler.trace(trace_dir):
      for i in range(3):
        state[0], state[1], metrics = compiled(*args(i))
      jax.block_until_ready(metrics)
    print(device_time_summary(trace_dir, steps=3))
  return ms, compile_s


def device_time_summary(trace_dir: str, steps: int, top: int = 30) -> str:
  """Where the traced steps spent device time: per profiler line (GPU streams, 'XLA Ops', ...) the
  total, then the `top` events of the busiest op-level line by total time, per step."""
  paths = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True))
  if not paths:
    return f'no trace written under {trace_dir}'
  data = ProfileData.from_file(paths[-1])
  out = []
  for plane in data.planes:
    if not plane.name.startswith('/device:'):
      continue
    lines = {}
    for line in plane.lines:
      totals = collections.Counter()
      for event in line.events:
        totals[event.name] += event.duration_ns
      if totals:
        lines[line.name] = totals
    if not lines:
      continue
    out.append(f'{plane.name}: ms per step by profiler line')
    out += [f'  {sum(t.values()) / 1e6 / steps:9.2f}  {name}' for name, t in lines.items()]
    ops = lines.get('XLA Ops') or max(lines.values(), key=lambda t: sum(t.values()))
    total = sum(ops.values()) or 1
    out.append(f'  top {top} of {len(ops)} ops (ms per step, share):')
    out += [f'  {ns / 1e6 / steps:9.3f} {100 * ns / total:5.1f}%  {name[:110]}' for name, ns in ops.most_common(top)]
  return '\n'.join(out) if out else f'no device plane in {paths[-1]} (CPU traces have none)'


def bench_reference(config, spec) -> dict | None:
  """The PyTorch reference of `spec`'s step (its BenchStep.reference, a script under benchmarks/
  printing a RESULT line) in a subprocess; None when there is none, or torch or peft is missing."""
  b = config.bench
  script = spec.bench.reference and os.path.join(REPO, 'benchmarks', spec.bench.reference)
  if not b.reference or not script or not os.path.exists(script):
    return None
  try:
    if importlib.util.find_spec('torch') is None or importlib.util.find_spec('peft') is None:
      return None
  except ValueError:
    return None
  cmd = [sys.executable, script, '--size', b.size, '--batch', str(b.batch), '--seq', str(b.seq),
         '--steps', str(b.reference_steps), '--warmup', '1']
  if b.vocab:
    cmd += ['--vocab', str(b.vocab)]
  if jax.default_backend() == 'gpu':
    cmd += ['--device', 'cuda']
  out = subprocess.run(cmd, capture_output=True, text=True)
  line = next((l for l in out.stdout.splitlines() if l.startswith('RESULT ')), None)
  if out.returncode != 0 or line is None:
    print(f'reference failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}', file=sys.stderr)
    return None
  ref = json.loads(line[len('RESULT '):])
  return {'name': REFERENCE_PREFIX + step_name(spec.name), 'size': b.size, 'batch': b.batch, 'seq': b.seq,
          'ms_per_step': ref.get('ms_per_step'), 'examples_per_s': ref.get('examples_per_s'),
          'tokens_per_s': ref.get('tokens_per_s'), 'compile_s': None,
          'peak_memory_bytes': ref.get('peak_memory_bytes'), 'mfu': None}


def run_bench(config, workdir):
  """The `bench` command: every measurement of config.bench, then bench.json and a table."""
  if 'bench' not in config:
    raise UserError('bench needs its own config: --config=configs/bench.py[:size=tiny,...]')
  runtime.ensure_writable_dir(workdir)
  # The references first: JAX keeps the device memory it has used until the process exits, so a
  # reference run after our steps gets only the rest (T5-base at batch 128 + 128, doubling the
  # batch-64 peaks: ours ~52 GB + the reference's ~97 GB, more than a 141 GB GPU).
  refs = [r for r in (bench_reference(config, s) for s in method_steps(config.bench.what.replace('+', ',').split(',')))
          if r is not None]
  rows = bench_ours(config)
  speedups = {}
  for ref in refs:
    ours = next((r for r in rows if REFERENCE_PREFIX + r['name'] == ref['name']), None)
    if ours and ref['examples_per_s']:
      speedups[ours['name']] = ours['examples_per_s'] / ref['examples_per_s']
  rows += refs
  # The first method's speed-up as one number (the featured method's, registered first), and each one's.
  speedup = next(iter(speedups.values()), None)
  result = {'results': rows, 'speedup_vs_reference': speedup, 'speedups_vs_reference': speedups,
            'env': env_info(),
            'mfu_note': 'MFU = model FLOPs/s over the bf16 matmul rate measured on this device; null on CPU'}
  runtime.write_json(os.path.join(workdir, 'bench.json'), result)
  print(format_table(rows, speedups))


def format_table(rows, speedups: dict) -> str:
  head = f'{"name":24s} {"size":9s} {"batch":>5s} {"seq":>5s} {"ex/s":>9s} {"tok/s":>10s} {"ms/step":>9s} {"compile s":>9s} {"peak MB":>8s} {"MFU":>6s}'
  lines = [head, '-' * len(head)]
  for r in rows:
    mfu = '-' if r.get('mfu') is None else f'{100 * r["mfu"]:.1f}%'
    comp = '-' if r.get('compile_s') is None else f'{r["compile_s"]:.1f}'
    mem = '-' if not r.get('peak_memory_bytes') else f'{r["peak_memory_bytes"] / 2**20:.0f}'
    lines.append(f'{r["name"]:24s} {r["size"]:9s} {r["batch"]:5d} {r["seq"]:5d} {r["examples_per_s"]:9.1f} '
                 f'{r["tokens_per_s"]:10.0f} {r["ms_per_step"]:9.1f} {comp:>9s} {mem:>8s} {mfu:>6s}')
  for name, speedup in speedups.items():
    lines.append(f'speedup of {name} over the PyTorch reference: {speedup:.2f}x (examples/s)')
  return '\n'.join(lines)
