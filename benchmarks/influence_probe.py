"""What the influence step does to the model, per curvature and damping, without the retrained model.

Takes a workdir whose original is trained (a `run` or `train`; its first seed), builds the
influence method's retained sample, forget batches and LoRA-B space as `run` does, and for each
(curvature, damping) solves (C + λI)⁻¹ Σ_F ∇ℓ with `--cg-iters` CG iterations and prints one JSON
line: CG's iterations, relative residuals and stop, the update norm, the losses (mean per-row
answer CE) of the retained sample C is built on, of other retained samples, of the forget set and
of the test set before and after, the local model's predictions of the retained-sample and forget
loss changes (g_Rᵀδ + ½δᵀCδ and g_Fᵀδ / |F|), test AUC and the held-out membership gap. It reads
nothing of the retrained model: what it shows is the mechanism (how far the step goes, whether the
local model it trusts still predicts the losses), which is what a damping can be chosen from.

  python benchmarks/influence_probe.py --workdir runs/demo --curvatures hessian,gauss_newton \
      --dampings 0.001,0.01,0.1,1
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True, help='a run whose original model is trained')
  p.add_argument('--curvatures', default='gauss_newton', help='comma-separated: gauss_newton, hessian')
  p.add_argument('--dampings', default='0.01', help='comma-separated λ values')
  p.add_argument('--cg-iters', type=int, default=20)
  p.add_argument('--power-iters', type=int, default=15, help="for G's top eigenvalue (0: skip)")
  return p.parse_args(argv)


def main(argv=None):
  args = parse(argv)
  import jax
  import jax.numpy as jnp

  from e2urec_jax import config as config_lib
  from e2urec_jax import seeds
  from e2urec_jax.errors import UserError
  from e2urec_jax.eval import evaluate, metrics
  from e2urec_jax.methods import common, influence, influence_solve
  from e2urec_jax.train import context, heldout, inference, paths
  from e2urec_jax.train.paths import ORIGINAL
  config = config_lib.load_saved(args.workdir)
  if config is None:
    raise UserError(f'--workdir={args.workdir}: no config.json; point it at a run whose original is trained')
  config.progress = False
  ctx = context.open_run(config, paths.run_paths(args.workdir), read_only=True)
  section, seed = config.unlearn.influence, int(config.seed)
  original = ctx.load_params(ORIGINAL)
  retain, forget = common.split_indices(ctx.data)
  n = len(ctx.data.splits['train'].label)
  sample = np.sort(np.random.default_rng(seeds.derive(seed, influence.NAME, 'retain_batches')).permutation(retain)
                   [:int(section.retain_samples)])
  other = np.setdiff1d(retain, sample)[:len(sample)]
  size = int(section.batch_size)
  retain_b, forget_b, other_b = influence._batches(ctx, [sample, forget, other], size)
  space = influence._space(ctx, section, original, seed)
  loss_fn, grad_fn = jax.jit(space.loss), jax.jit(jax.grad(space.loss))

  def dot(x, y):
    return float(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))))

  def mean_loss(batches, count, point):
    return sum(float(loss_fn(point, space.frozen, b)) for b in batches) / count

  def grad_sum(batches):
    return jax.tree.map(lambda *g: sum(g), *[grad_fn(space.point, space.frozen, b) for b in batches])

  rows, test = heldout.HeldoutRows(ctx), np.arange(len(ctx.data.splits['test'].label))

  def model_stats(delta):
    point = jax.tree.map(jnp.add, space.point, delta)
    predictor = inference.SingleModel(ctx, *space.weights(delta))
    scored = evaluate.score(ctx, predictor, 'test', test)
    return {'retain_sample_loss': mean_loss(retain_b, len(sample), point),
            'other_retain_loss': mean_loss(other_b, len(other), point),
            'forget_loss': mean_loss(forget_b, len(forget), point), 'test_loss': float(np.mean(scored['loss'])),
            'test_auc': float(metrics.auc(ctx.data.splits['test'].label, scored['p_yes'])),
            'heldout_gap': abs(rows.auc(ctx, predictor) - heldout.TARGET)}

  before = model_stats(jax.tree.map(jnp.zeros_like, space.point))
  g_r = jax.tree.map(lambda t: t / len(sample), grad_sum(retain_b))
  g_f = grad_sum(forget_b)
  print(json.dumps({'workdir': args.workdir, 'seed': seed, 'train': n, 'forget': len(forget),
                    'retain_sample': len(sample), 'solved_params': int(sum(np.size(v) for v in jax.tree.leaves(g_f))),
                    'grad_retain_mean_norm': np.sqrt(dot(g_r, g_r)), 'grad_forget_sum_over_n_norm': np.sqrt(dot(g_f, g_f)) / n,
                    'cos_grad_retain_forget': dot(g_r, g_f) / np.sqrt(dot(g_r, g_r) * dot(g_f, g_f)), 'before': before}),
        flush=True)
  for curvature in args.curvatures.split(','):
    derivs = influence_solve.Derivatives(space, retain_b, forget_b, len(sample), curvature)
    if curvature == 'gauss_newton' and args.power_iters:
      v = jax.tree.map(lambda t: jnp.asarray(np.random.RandomState(0).randn(*t.shape), t.dtype), space.point)
      for _ in range(args.power_iters):
        v = jax.tree.map(lambda t, s=np.sqrt(dot(v, v)): t / s, v)
        gv = derivs.curvature_product(v)
        top, v = dot(v, gv), gv
      print(json.dumps({'curvature': curvature, 'top_eigenvalue': top}), flush=True)
    for damping in [float(x) for x in args.dampings.split(',')]:
      start = time.perf_counter()
      delta, info = influence_solve.influence_update(derivs, n=n, damping=damping, iters=args.cg_iters)
      seconds = time.perf_counter() - start
      after = model_stats(delta)
      print(json.dumps({
          'curvature': curvature, 'damping': damping, 'cg_iterations': info['iterations'], 'cg_stop': info['stop'],
          'cg_residuals': [round(r, 5) for r in info['residuals']], 'solve_s': round(seconds, 1),
          'update_norm': np.sqrt(dot(delta, delta)),
          'retain_sample_loss_change': {'local_model': dot(g_r, delta) + 0.5 * dot(delta, derivs.curvature_product(delta)),
                                        'actual': after['retain_sample_loss'] - before['retain_sample_loss']},
          'forget_loss_change': {'first_order': dot(g_f, delta) / len(forget),
                                 'actual': after['forget_loss'] - before['forget_loss']},
          'after': after}), flush=True)


if __name__ == '__main__':
  main()
