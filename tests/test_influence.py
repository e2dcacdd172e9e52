"""The influence-function method (methods/influence.py): its Hessian-vector product against finite
differences of the gradient, its Gauss-Newton-vector product against the explicit Jᵀ H_out J, its
CG solve against the exact (C + λI)⁻¹ g (C: H or G) on a model small enough to form them, and a
tiny end-to-end run (trained, published, reported, and it moves the model).
"""
import os

import numpy as np
import pytest

from conftest import tiny_run_config
from e2urec_jax.errors import UserError

VOCAB = 16


@pytest.fixture(scope='module')
def tiny():
  """A T5 with d_model 8, one layer each side, LoRA r=2 on every 'q' (48 B entries), and batches."""
  import jax
  import transformers

  from e2urec_jax.models import init_params, lora, model_from_hf_config
  hf = transformers.T5Config(vocab_size=VOCAB, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2,
                             dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                             feed_forward_proj='gated-gelu', tie_word_embeddings=False)
  model = lora.configure(model_from_hf_config(hf), r=2, alpha=4)
  params = init_params(model, jax.random.key(0))
  adapters = lora.init_adapters(params, jax.random.key(1), 2, ('q',))
  return model, params, adapters


def batch(seed, rows=4, length=6, real=None):
  """A T5 batch of `rows` random rows, two answer tokens each (rows past `real`: padding)."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(2, VOCAB, (rows, length)).astype(np.int32)
  labels = rng.randint(2, VOCAB, (rows, 2)).astype(np.int32)
  mask = np.ones((rows, 2), np.float32)
  if real is not None:
    mask[real:] = 0.0
  return {'input_ids': ids, 'attention_mask': np.ones_like(ids), 'answer_labels': labels, 'answer_mask': mask,
          'decoder_input_ids': np.concatenate([np.zeros((rows, 1), np.int32), labels[:, :1]], axis=1),
          'answer_positions': np.tile(np.arange(2, dtype=np.int32), (rows, 1))}


def spaces(tiny):
  from e2urec_jax.methods import influence_solve
  model, params, adapters = tiny
  return {'lora': influence_solve.lora_space(model, params, adapters), 'full': influence_solve.full_space(model, params)}


def flat(tree):
  from jax.flatten_util import ravel_pytree
  return np.asarray(ravel_pytree(tree)[0], np.float64)


@pytest.mark.parametrize('kind', ['lora', 'full'])
def test_hvp_equals_central_differences_of_the_gradient(tiny, kind):
  """H·v (jvp of grad) = (∇L(θ + εv) - ∇L(θ - εv)) / 2ε, in float32: the best ε of three (truncation
  error falls with ε, rounding error grows) agrees to 0.5%."""
  import jax

  from e2urec_jax.methods import influence_solve
  space = spaces(tiny)[kind]
  b = batch(0)
  v = jax.tree.map(lambda x: np.random.RandomState(3).randn(*x.shape).astype(np.float32), space.point)
  v = jax.tree.map(lambda x: x / np.linalg.norm(flat(v)), v)
  hv = flat(jax.jit(lambda p, f, v, b: influence_solve.hvp(space.loss, p, f, v, b))(space.point, space.frozen, v, b))
  grad = jax.jit(jax.grad(space.loss))
  errors = []
  for eps in (1e-2, 3e-3, 1e-3):
    plus = grad(jax.tree.map(lambda p, d: p + eps * d, space.point, v), space.frozen, b)
    minus = grad(jax.tree.map(lambda p, d: p - eps * d, space.point, v), space.frozen, b)
    errors.append(np.linalg.norm((flat(plus) - flat(minus)) / (2 * eps) - hv) / np.linalg.norm(hv))
  assert np.linalg.norm(hv) > 1e-3 and min(errors) < 5e-3, errors


def test_lora_space_has_no_gradient_in_a_at_b_zero(tiny):
  """Why the solve is in B alone: at B = 0 the loss's gradient w.r.t. A is exactly 0 (B's is not)."""
  import jax
  from flax import traverse_util

  from e2urec_jax.methods import influence_solve
  from e2urec_jax.models import answer_logits
  model, params, adapters = tiny
  grads = jax.grad(lambda a: influence_solve.rows_loss(answer_logits(model, params, batch(0), adapters=a), batch(0)))(adapters)
  by_name = {}
  for path, g in traverse_util.flatten_dict(grads).items():
    by_name.setdefault(path[-1], []).append(np.abs(np.asarray(g)).max())
  assert max(by_name['lora_a']) == 0.0 and max(by_name['lora_b']) > 1e-4


def test_cg_solves_a_damped_system_and_stops_at_negative_curvature():
  from e2urec_jax.methods import influence, influence_solve
  rng = np.random.RandomState(0)
  q = np.linalg.qr(rng.randn(12, 12))[0]
  a = (q * np.linspace(-0.5, 4.0, 12)) @ q.T  # symmetric, one negative eigenvalue range
  b = {'x': rng.randn(12).astype(np.float32)}
  mv = lambda v: {'x': (a @ np.asarray(v['x'], np.float64)).astype(np.float32)}  # noqa: E731
  x, info = influence_solve.conjugate_gradient(mv, b, damping=1.0, iters=50)
  assert info['stop'] == 'converged'
  np.testing.assert_allclose(x['x'], np.linalg.solve(a + np.eye(12), b['x']), rtol=1e-4, atol=1e-5)
  seen = []
  x, info = influence_solve.conjugate_gradient(mv, b, damping=1.0, iters=3, on_iterate=lambda k, x, last: seen.append(
      (k, last)) or False)
  assert info == {'iterations': 3, 'residual': info['residuals'][-1], 'residuals': info['residuals'],
                  'stop': 'iterations'} and seen[-1] == (3, True) and len(info['residuals']) == 3
  _, info = influence_solve.conjugate_gradient(lambda v: {'x': -v['x']}, b, damping=0.5, iters=5)
  assert info['stop'] == 'negative_curvature' and info['iterations'] == 0
  assert influence.auto_checks(20) == {1, 2, 4, 8, 16, 20}


def explicit_ggn(space, batches):
  """G = Σ_rows Σ_answer w·Jᵀ(diag(p) − ppᵀ)J, from the logits' full Jacobian (jax.jacfwd) and the
  softmax written out (w: 1 / the row's answer tokens, 0 at padding), in float64."""
  import jax
  from jax.flatten_util import ravel_pytree
  point, unravel = ravel_pytree(space.point)
  total = 0.0
  for b in batches:
    logits_of = lambda q, b=b: space.logits(unravel(q), space.frozen, b)  # noqa: E731
    jac = np.asarray(jax.jit(jax.jacfwd(logits_of))(point), np.float64)  # [batch, answer, vocab, params]
    logits = np.asarray(jax.jit(logits_of)(point), np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    h_out = np.einsum('bav,vw->bavw', p, np.eye(p.shape[-1])) - np.einsum('bav,baw->bavw', p, p)
    mask = np.asarray(b['answer_mask'], np.float64)
    w = mask / np.maximum(mask.sum(-1, keepdims=True), 1.0)
    weighted = w[..., None, None] * np.einsum('bavw,bawq->bavq', h_out, jac)  # [batch, answer, vocab, params]
    total = total + jac.reshape(-1, jac.shape[-1]).T @ weighted.reshape(-1, jac.shape[-1])
  return total


@pytest.mark.parametrize('kind', ['lora', pytest.param('full', marks=pytest.mark.slow)])  # full: 25 s
def test_ggn_product_equals_the_explicit_gauss_newton_matrix_which_is_psd(tiny, kind):
  """G·v (linearize, H_out in logit space, transpose) = J^T H_out J v formed explicitly, on the B of
  LoRA (48 parameters) and on every weight; and G has no negative eigenvalue (unlike H here)."""
  import jax
  from jax.flatten_util import ravel_pytree

  from e2urec_jax.methods import influence_solve
  space = spaces(tiny)[kind]
  b = batch(1, real=3)
  ggn = explicit_ggn(space, [b])
  _, unravel = ravel_pytree(space.point)
  product = jax.jit(lambda p, f, v, b: influence_solve.ggn_vp(space.logits, p, f, v, b))
  for seed in range(3):
    v = np.random.RandomState(seed).randn(ggn.shape[0]).astype(np.float32)
    gv = flat(product(space.point, space.frozen, unravel(v), b))
    np.testing.assert_allclose(gv, ggn @ v, rtol=1e-4, atol=1e-5 * np.abs(ggn @ v).max())
  eig = np.linalg.eigvalsh(ggn)
  assert eig[-1] > 1e-3 and eig[0] >= -1e-6 * eig[-1], (eig[0], eig[-1])
  if kind == 'lora':
    point, unravel = ravel_pytree(space.point)
    hessian = np.asarray(jax.jit(jax.hessian(lambda q: space.loss(unravel(q), space.frozen, b)))(point), np.float64)
    assert np.linalg.eigvalsh(hessian)[0] < -1e-2 * eig[-1]  # the Hessian at the same point is indefinite


@pytest.fixture(scope='module')
def solve_case(tiny):
  """The B of LoRA r=2 on three 'q' kernels (48 parameters): retained and forget batches, H and G
  formed exactly over the retained batches (padding rows included) and the forget gradient."""
  import jax
  from jax.flatten_util import ravel_pytree
  space = spaces(tiny)['lora']
  retain = [batch(1), batch(2, real=3)]  # 7 real retained rows
  forget = [batch(3)]
  point, unravel = ravel_pytree(space.point)
  hessian_of = jax.jit(jax.hessian(lambda p, b: space.loss(unravel(p), space.frozen, b)))
  hessian = sum(np.asarray(hessian_of(point, b), np.float64) for b in retain) / 7
  ggn = explicit_ggn(space, retain) / 7
  g = flat(jax.grad(space.loss)(space.point, space.frozen, forget[0]))
  return {'space': space, 'retain': retain, 'forget': forget, 'g': g,
          'hessian': hessian, 'gauss_newton': ggn}


@pytest.mark.slow  # 14 s each, 40 s for the fixture: the fast tier stays under 90 s on a cold cache
@pytest.mark.parametrize('curvature', ['hessian', 'gauss_newton'])
def test_cg_update_equals_the_exact_damped_newton_step(solve_case, curvature):
  """(scale/n)(C + λI)⁻¹ Σ_F ∇ℓ by CG = the direct solve with C formed exactly: the Hessian (damped
  past its most negative eigenvalue) or the Gauss-Newton matrix (damped by 1% of its largest)."""
  from e2urec_jax.methods import influence_solve
  case = solve_case
  derivs = influence_solve.Derivatives(case['space'], case['retain'], case['forget'], num_retain=7, curvature=curvature)
  matrix, g = case[curvature], case['g']
  eig = np.linalg.eigvalsh(matrix)
  damping = float(max(0.0, -eig[0]) + 0.1 * eig[-1]) if curvature == 'hessian' else float(1e-2 * eig[-1])
  n, scale = 50, 1.5
  delta, info = influence_solve.influence_update(derivs, n=n, damping=damping, iters=200, scale=scale)
  exact = scale / n * np.linalg.solve(matrix + damping * np.eye(len(g)), g)
  assert info['stop'] == 'converged', info
  np.testing.assert_allclose(flat(delta), exact, rtol=2e-3, atol=2e-4 * np.abs(exact).max())


@pytest.mark.slow  # 12 s
def test_gauss_newton_cg_converges_where_the_hessian_meets_negative_curvature(solve_case):
  """With a damping below the Hessian's most negative eigenvalue, CG on H + λI stops at a direction
  of negative curvature within a few iterations (its iterate is about a scaled gradient); on G + λI
  it converges: residual below RTOL."""
  from e2urec_jax.methods import influence_solve
  case = solve_case
  damping = float(1e-3 * np.linalg.eigvalsh(case['gauss_newton'])[-1])
  assert damping < -np.linalg.eigvalsh(case['hessian'])[0]  # H + λI is indefinite
  infos = {}
  for curvature in ('hessian', 'gauss_newton'):
    derivs = influence_solve.Derivatives(case['space'], case['retain'], case['forget'], num_retain=7, curvature=curvature)
    infos[curvature] = influence_solve.influence_update(derivs, n=50, damping=damping, iters=200)[1]
    print(curvature, {k: v for k, v in infos[curvature].items() if k != 'residuals'})
  hess, ggn = infos['hessian'], infos['gauss_newton']
  assert hess['stop'] == 'negative_curvature' and hess['iterations'] <= 5 and hess['residual'] > 0.1, hess
  assert ggn['stop'] == 'converged' and ggn['residual'] <= influence_solve.RTOL and ggn['iterations'] > 5, ggn
  assert len(ggn['residuals']) == ggn['iterations'] and ggn['residuals'][-1] == ggn['residual']


def tiny_config():
  config = tiny_run_config('influence')
  s = config.unlearn.influence
  s.retain_samples, s.cg_iters, s.batch_size, s.damping = 48, 4, 16, 0.1
  return config


def test_the_section_validates():
  from e2urec_jax import config as config_lib
  config = tiny_config()
  config_lib.validate(config)
  config.unlearn.influence.damping = -1.0
  with pytest.raises(UserError, match=r'^config.unlearn.influence.damping=-1.0: must be a finite number > 0$'):
    config_lib.validate(config)
  config.unlearn.influence.damping = 0.1
  config.unlearn.influence.params = 'all'
  with pytest.raises(UserError, match=r'config.unlearn.influence.params=.all.'):
    config_lib.validate(config)


@pytest.mark.slow
def test_run_publishes_reports_and_moves_the_model(tmp_path):
  """`run` with the method alone: original, retrain, influence (adapters on the original), reported;
  its forget-set predictions differ from the original's; its CG record (curvature, iterations,
  residuals, why it stopped) is in the row's phase. Then the 'full' space with the retrain-free
  stop, as another row on the same original: full weights, the CG iteration chosen by the rule."""
  from e2urec_jax import runtime
  from e2urec_jax.eval import report
  from e2urec_jax.experiment import run_experiment
  from e2urec_jax.methods import common, runner
  from e2urec_jax.train import artifacts, context, inference, paths
  config = tiny_config()
  run_experiment(config, str(tmp_path))
  results = runtime.read_json(os.path.join(tmp_path, 'results.json'))
  problems = report.validate_results(results, required_methods=('original', 'retrain', 'influence'))
  assert problems == ['noise_floor: expected an object, got NoneType']  # eval.noise_floor off: no twin retrain
  row = results['methods']['influence']
  assert row['phase']['params'] == 'lora' and row['phase']['cg_iterations'] >= 1 and row['time_s'] > 0
  assert row['phase']['update_norm'] > 0 and row['phase']['train_samples'] > row['phase']['forget_samples'] > 0
  phase = row['phase']  # CG's record: Gauss-Newton by default, never negative curvature
  assert phase['curvature'] == 'gauss_newton' and phase['cg_stop'] in ('iterations', 'converged')
  assert phase['cg_negative_curvature'] is False and len(phase['cg_residuals']) == phase['cg_iterations']
  assert phase['cg_residual'] == phase['cg_residuals'][-1] == phase['cg_chosen_residual'] < 1.0
  assert artifacts.is_adapter_dir(os.path.join(tmp_path, 'models', 'influence'))
  assert '`influence`' in open(os.path.join(tmp_path, 'results.md')).read()

  ctx = context.open_run(config, paths.run_paths(str(tmp_path)))
  _, forget = common.split_indices(ctx.data)

  def forget_logits(name):
    model = inference.load_predictor(ctx, name)
    return np.concatenate([model.logits(b)[:real] for b, real in inference.iterate_eval(ctx, 'train', forget)])
  original = forget_logits('original')
  assert np.abs(forget_logits('influence') - original).max() > 1e-4

  ctx.config.unlearn.auto = 'heldout_mia'
  stats = runner.run_method(ctx, 'influence', name='influence[full]', overrides=(('params', 'full'),))
  assert stats['params'] == 'full' and stats['auto'] == 'heldout_mia' and stats['best_step'] == stats['steps']
  assert 1 <= stats['steps'] <= 4 and 0 <= stats['best_valid'] <= 0.5
  assert stats['cg_chosen_residual'] == stats['cg_residuals'][stats['steps'] - 1]  # the published iterate's
  assert stats['trainable_params'] == ctx.bundle.num_base_params
  assert os.path.exists(os.path.join(tmp_path, 'models', 'influence[full]', 'model.safetensors'))
  assert np.abs(forget_logits('influence[full]') - original).max() > 1e-4
