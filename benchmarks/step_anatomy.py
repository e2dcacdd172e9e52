"""Compile time, program size and XLA's memory plan of the E2URec step, without running it.

Lowers and compiles the bench's E2URec step (or one of its parts) for abstract inputs
(`jax.ShapeDtypeStruct`: no weights, no data, no device memory) and prints one JSON line:
seconds to trace, lower and compile, the number of HLO instructions after optimisation, and
`compiled.memory_analysis()` (arguments, outputs, temporaries: the peak of XLA's buffer plan).
So T5-base at batch 128 can be sized on a CPU, and a GPU run can check that it fits first.

  python benchmarks/step_anatomy.py --size base --batch 64 --dtype bfloat16 --unroll 1
  python benchmarks/step_anatomy.py --size tiny --part student --attention xla --attention-dropout 0

Parts: step (the whole E2URec step: student forward + backward on [retain; forget], the
original on both, the augmented model on forget, AdamW), student (the student's loss and
adapter gradients alone), teachers (the two teacher forwards alone).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--size', default='tiny', choices=['tiny', 'small', 'base', 'llama135m'])
  p.add_argument('--batch', type=int, default=16, help='retain and forget rows each')
  p.add_argument('--seq', type=int, default=256)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--dropout', type=float, default=0.1)
  p.add_argument('--attention', default='einsum')
  p.add_argument('--attention-dropout', type=float, default=-1.0)
  p.add_argument('--remat', action='store_true')
  p.add_argument('--remat-policy', default='nothing')
  p.add_argument('--unroll', type=int, default=0, help='layer-scan unroll; 0 = platform default')
  p.add_argument('--dropout-seeds', default='bits', choices=['bits', 'key'])
  p.add_argument('--part', default='step', choices=['step', 'student', 'teachers'])
  p.add_argument('--no-compile', action='store_true', help='stop after lowering')
  p.add_argument('--hlo-dir', default='', help='also write the optimised HLO text there')
  return p.parse_args(argv)


def build(args):
  """(function, abstract arguments) of the chosen part."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from e2urec_jax import bench
  from e2urec_jax.methods.e2urec import e2urec_loss_fn, frozen_teachers
  from e2urec_jax.models import abstract_params, answer_logits, lora, model_from_hf_config
  from e2urec_jax.train import mesh as mesh_lib
  from e2urec_jax.train import steps
  cfg = bench.hf_config(args.size, 0, args.dropout)
  model = lora.configure(
      model_from_hf_config(cfg, dtype=args.dtype, remat=args.remat, attention=args.attention,
                           attention_dropout=args.attention_dropout, remat_policy=args.remat_policy,
                           scan_unroll=args.unroll, dropout_seeds=args.dropout_seeds), r=16, alpha=32.0, dropout=0.05)
  params = abstract_params(model)
  adapters = jax.eval_shape(lambda p: lora.init_adapters(p, jax.random.key(1), 16, lora.default_targets(model.family)),
                            params)
  host = bench.random_batch(model.family, args.batch, args.seq, 100, np.random.default_rng(0))
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host.items()}
  pair = {'retain': batch, 'forget': batch}
  frozen = frozen_teachers(params, adapters, adapters)
  key = jax.eval_shape(lambda: jax.random.key(0))
  hp = {k: jax.ShapeDtypeStruct((), jnp.float32) for k in ('lr', 'weight_decay', 'w', 'alpha', 'forget_only')}
  loss_fn = e2urec_loss_fn(model, True, True, True)
  if args.part == 'step':
    opt = jax.eval_shape(steps.init_opt_state, adapters)
    return steps.make_train_step(loss_fn, mesh_lib.make_mesh()).jitted, (adapters, opt, frozen, pair, key, hp), model
  both = {k: jax.ShapeDtypeStruct((2 * v.shape[0],) + v.shape[1:], v.dtype) for k, v in batch.items()}
  if args.part == 'student':
    from e2urec_jax.losses import answer_cross_entropy

    def student(a, base, both, rng):  # loss and adapter gradients of the student pass alone
      loss = lambda a: answer_cross_entropy(answer_logits(model, base, both, adapters=a, dropout_rng=rng),
                                            both['answer_labels'], both['answer_mask'])
      return jax.value_and_grad(loss)(a)
    return jax.jit(student), (adapters, params, both, key), model

  def teachers(base, zero, aug, both, forget):
    return answer_logits(model, base, both, adapters=zero), answer_logits(model, base, forget, adapters=aug)
  return jax.jit(teachers), (params, adapters, adapters, both, batch), model


def anatomy(args) -> dict:
  import jax
  fn, fn_args, model = build(args)
  out = {'size': args.size, 'batch': args.batch, 'seq': args.seq, 'dtype': args.dtype, 'dropout': args.dropout,
         'attention': args.attention, 'attention_dropout': args.attention_dropout, 'remat': args.remat,
         'remat_policy': args.remat_policy, 'unroll': args.unroll, 'dropout_seeds': args.dropout_seeds,
         'part': args.part,
         'backend': jax.default_backend(), 'jax': jax.__version__}
  start = time.perf_counter()
  lowered = fn.lower(*fn_args)
  out['trace_and_lower_s'] = time.perf_counter() - start
  out['stablehlo_lines'] = lowered.as_text().count('\n')
  if args.no_compile:
    return out
  start, cpu = time.perf_counter(), time.process_time()
  compiled = lowered.compile()
  out['compile_s'] = time.perf_counter() - start
  out['compile_cpu_s'] = time.process_time() - cpu  # all threads' CPU time: steadier on a shared machine
  text = compiled.as_text() or ''
  out['hlo_instructions'] = sum(1 for line in text.splitlines() if ' = ' in line and not line.lstrip().startswith('//'))
  out['hlo_fusions'] = text.count(' fusion(')
  if args.hlo_dir:
    os.makedirs(args.hlo_dir, exist_ok=True)
    name = f'{args.size}_b{args.batch}_{args.part}_{args.attention}.hlo.txt'
    with open(os.path.join(args.hlo_dir, name), 'w') as f:
      f.write(text)
  mem = compiled.memory_analysis()
  if mem is not None:
    for field in ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes', 'temp_size_in_bytes',
                  'generated_code_size_in_bytes'):
      out[field] = int(getattr(mem, field, 0) or 0)
    out['peak_estimate_bytes'] = (out['argument_size_in_bytes'] + out['output_size_in_bytes']
                                  - out['alias_size_in_bytes'] + out['temp_size_in_bytes'])
  return out


def main(argv=None):
  args = parse(argv)
  if args.dtype not in ('float32', 'bfloat16'):
    raise SystemExit('--dtype: float32 or bfloat16')
  from e2urec_jax import runtime
  runtime.setup(jax_cache_dir='')  # the CLI's XLA flags; no compilation cache
  print('ANATOMY ' + json.dumps(anatomy(args)), flush=True)


if __name__ == '__main__':
  main()
