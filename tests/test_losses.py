"""Loss functions against straightforward NumPy versions of their formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e2urec_jax import losses

B, A, V = 4, 3, 11


def np_log_softmax(x):
  x = x.astype(np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_token_logp(logits, labels, mask):
  lp = np_log_softmax(logits)
  out = np.zeros(labels.shape)
  for b in range(labels.shape[0]):
    for a in range(labels.shape[1]):
      if mask[b, a] > 0:
        out[b, a] = lp[b, a, labels[b, a]]
  return out


def np_kd(teacher, student, mask):
  p = np.exp(np_log_softmax(teacher))
  per = -(p * np_log_softmax(student)).sum(-1)
  return (per * mask).sum() / max(mask.sum(), 1.0)


@pytest.fixture
def data():
  rng = np.random.default_rng(0)
  logits = lambda: rng.normal(scale=3.0, size=(B, A, V)).astype(np.float32)  # noqa: E731
  labels = rng.integers(0, V, size=(B, A)).astype(np.int32)
  mask = np.ones((B, A), np.float32)
  mask[1, 2] = 0.0  # a shorter answer
  mask[3] = 0.0  # a padding row
  labels[mask == 0] = -100  # ignored ids must not matter
  return dict(s=logits(), s2=logits(), o=logits(), o2=logits(), a=logits(), labels=labels, mask=mask)


def test_answer_cross_entropy(data):
  s, labels, mask = data['s'], data['labels'], data['mask']
  nll = -np_token_logp(s, labels, mask)
  expected = nll.sum() / mask.sum()
  np.testing.assert_allclose(losses.answer_cross_entropy(s, labels, mask), expected, rtol=1e-5)
  per = losses.answer_cross_entropy(s, labels, mask, per_example=True)
  expected_per = nll.sum(-1) / np.maximum(mask.sum(-1), 1)
  np.testing.assert_allclose(per, expected_per, rtol=1e-5, atol=1e-6)
  assert per[3] == 0.0
  ll = losses.answer_log_likelihood(s, labels, mask)
  np.testing.assert_allclose(ll, -nll.sum(-1), rtol=1e-5, atol=1e-6)


def test_all_masked_is_zero_not_nan(data):
  zero = np.zeros((B, A), np.float32)
  assert losses.answer_cross_entropy(data['s'], data['labels'], zero) == 0.0
  assert losses.distillation_loss(data['o'], data['s'], zero) == 0.0


def test_bf16_inputs_computed_in_fp32(data):
  s16 = jnp.asarray(data['s'], jnp.bfloat16)
  out = losses.answer_cross_entropy(s16, data['labels'], data['mask'])
  assert out.dtype == jnp.float32
  expected = -np_token_logp(np.asarray(s16, np.float32), data['labels'], data['mask']).sum() / data['mask'].sum()
  np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_distillation_loss(data):
  o, s, mask = data['o'], data['s'], data['mask']
  np.testing.assert_allclose(losses.distillation_loss(o, s, mask), np_kd(o, s, mask), rtol=1e-5)
  np.testing.assert_allclose(losses.distillation_loss(o, s), np_kd(o, s, np.ones((B, A))), rtol=1e-5)


def test_distillation_gradient_only_into_student(data):
  o, s, mask = jnp.asarray(data['o']), jnp.asarray(data['s']), data['mask']
  g_teacher, g_student = jax.grad(losses.distillation_loss, argnums=(0, 1))(o, s, mask)
  assert np.all(np.asarray(g_teacher) == 0)
  assert np.abs(np.asarray(g_student)).sum() > 0
  # d/ds of -sum p_t log softmax(s) = softmax(s) - p_t, per position, / number of positions
  expected = (np.exp(np_log_softmax(data['s'])) - np.exp(np_log_softmax(data['o']))) * mask[..., None] / mask.sum()
  np.testing.assert_allclose(g_student, expected, rtol=1e-4, atol=1e-6)


def test_forgetting_teacher(data):
  o, a = data['o'], data['a']
  alpha = 2.0
  expected = o.astype(np.float64) - alpha * np.maximum(a - o, 0)
  out = np.asarray(losses.forgetting_teacher_logits(o, a, alpha))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  where_lower = a <= o
  assert where_lower.any() and (~where_lower).any()
  np.testing.assert_array_equal(out[where_lower], o[where_lower])
  assert np.all(out[~where_lower] < o[~where_lower])


def test_neggrad_badt_ga():
  r, f = jnp.float32(1.3), jnp.float32(0.7)
  np.testing.assert_allclose(losses.neggrad_loss(r, f), 1.3 - 0.2 * 0.7, rtol=1e-6)
  np.testing.assert_allclose(losses.neggrad_loss(r, f, weight=0.5), 1.3 - 0.5 * 0.7, rtol=1e-6)
  np.testing.assert_allclose(losses.badt_loss(r, f), 1.3 + 0.2 * 0.7, rtol=1e-6)
  np.testing.assert_allclose(losses.ga_loss(f), -0.7, rtol=1e-6)


def test_npo_loss():
  rng = np.random.default_rng(1)
  student, ref = rng.normal(-3, 1, size=6), rng.normal(-3, 1, size=6)
  beta = 0.1
  log_sigmoid = lambda x: -np.log1p(np.exp(-x))  # noqa: E731
  expected = -(2 / beta) * np.mean(log_sigmoid(-beta * (student - ref)))
  np.testing.assert_allclose(losses.npo_loss(student, ref, beta), expected, rtol=1e-5)
  keep = np.array([1, 1, 1, 0, 1, 0], np.float32)
  expected_masked = -(2 / beta) * np.mean(log_sigmoid(-beta * (student - ref))[keep > 0])
  np.testing.assert_allclose(losses.npo_loss(student, ref, beta, example_mask=keep), expected_masked, rtol=1e-5)
  g_ref = jax.grad(losses.npo_loss, argnums=1)(jnp.asarray(student), jnp.asarray(ref), beta)
  assert np.all(np.asarray(g_ref) == 0)
  # At student == ref the loss is (2/beta) log 2.
  np.testing.assert_allclose(losses.npo_loss(ref, ref, beta), 2 / beta * np.log(2), rtol=1e-5)


def _np_e2urec(d, w, alpha, forget_only, forget_teacher=True, remember_teacher=True):
  sr, sf, o_r, o_f, a_f = d['s'], d['s2'], d['o'], d['o2'], d['a']
  labels, rmask, fmask = d['labels'], d['mask'], d['fmask']
  ce = -np_token_logp(sr, labels, rmask).sum() / rmask.sum()
  rkd = np_kd(o_r, sr, rmask) if remember_teacher else 0.0
  teacher = o_f - alpha * np.maximum(a_f - o_f, 0) if forget_teacher else o_f
  fkd = np_kd(teacher, sf, fmask)
  return fkd if forget_only else w * (ce + rkd) + (1 - w) * fkd


@pytest.mark.parametrize('forget_teacher,remember_teacher', [(True, True), (False, True), (True, False)])
def test_e2urec_loss(data, forget_teacher, remember_teacher):
  d = dict(data, fmask=np.ones((B, A), np.float32))
  d['fmask'][0, 1] = 0.0
  w, alpha = 0.6, 2.0

  @jax.jit
  def loss_fn(forget_only):
    return losses.e2urec_loss(
        d['s'], d['s2'], d['o'], d['o2'], d['a'], d['labels'], d['mask'], d['fmask'],
        w=w, alpha=alpha, forget_only=forget_only,
        use_forget_teacher=forget_teacher, use_remember_teacher=remember_teacher)

  for forget_only in (False, True):  # one compiled function serves both phases
    loss, aux = loss_fn(jnp.asarray(forget_only))
    expected = _np_e2urec(d, w, alpha, forget_only, forget_teacher, remember_teacher)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(aux['loss'], loss)
    assert set(aux) == {'loss', 'retain_ce', 'retain_kd', 'forget_kd'}
  assert loss_fn._cache_size() == 1


def test_e2urec_gradient_only_into_student(data):
  d = data

  def f(student_retain, student_forget, orig_retain, orig_forget, aug_forget):
    return losses.e2urec_loss(student_retain, student_forget, orig_retain, orig_forget, aug_forget,
                              d['labels'], d['mask'], d['mask'], w=0.6, alpha=2.0,
                              forget_only=jnp.float32(0.0))[0]

  grads = jax.grad(f, argnums=(0, 1, 2, 3, 4))(*(jnp.asarray(d[k]) for k in ('s', 's2', 'o', 'o2', 'a')))
  assert np.abs(np.asarray(grads[0])).sum() > 0 and np.abs(np.asarray(grads[1])).sum() > 0
  for g in grads[2:]:
    assert np.all(np.asarray(g) == 0)
