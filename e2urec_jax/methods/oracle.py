"""The oracle teacher: a diagnostic, not a method one could deploy (it needs the retrained model).

The same LoRA student, steps, retain term (distilled from the original) and batches as E2URec,
with E2URec's section and seeds (`same_as='e2urec'`: the same initial adapters and batches),
distilled on the forget set towards the *retrained* model's logits instead of the forgetting
teacher: E2URec's loss with use_forget_teacher=False over a forget-set cache whose 'original'
entry holds the retrained model's answer logits. It bounds what E2URec's distillation can reach
with a perfect forget target: the report puts its distance to retrain on the forget set beside
E2URec's teacher (mechanism['oracle']). It is not in config.unlearn.methods' default and
`forget` cannot serve it.
"""
import time

from e2urec_jax.methods import common, e2urec, llmrec
from e2urec_jax.methods.spec import FrozenInputs, Helper, MethodSpec, register

NAME = 'oracle'


def _ensure_retrain(ctx, callbacks=()) -> dict:
  return llmrec.ensure_retrain(ctx, callbacks=callbacks)


def _teachers(ctx, section, original) -> FrozenInputs:
  """The original (base, zero adapters: the retain term's teacher) and the forget-set cache of the
  retrained model's logits under 'original' (always cached: the step cannot run the retrained
  model, a full model of its own). Its time is part of the cost (FrozenInputs.build_s)."""
  base = ctx.put(ctx.base_dtype(original))
  zero = ctx.put(ctx.zero_adapters(original))
  start = time.perf_counter()
  retrain = ctx.put(ctx.base_dtype(ctx.load_params(llmrec.RETRAIN)))
  cache = e2urec.forget_logits(ctx, {'original': (retrain, zero)})
  print(f'oracle: the retrained model\'s forget-set logits computed once ({time.perf_counter() - start:.1f} s)')
  return FrozenInputs({'base': base, 'zero_adapters': zero, 'forget_teachers': ctx.put(cache)},
                      build_s=time.perf_counter() - start)


def _static(ctx, section) -> dict:
  return {'augmented_is_adapters': False, 'use_forget_teacher': False,
          'use_remember_teacher': bool(section.use_remember_teacher), 'cached_teachers': True}


def _batches(ctx, section, seed_of):
  return common.paired_batches(ctx, section.batch_size, seed_of, forget_rows=True)


def _hparams(ctx, section):
  return e2urec.SPEC.hparams(ctx, section)  # w, alpha (unused: no forgetting teacher), the warm-up


def _distance(probe, name: str):
  """MethodSpec.diagnostic: its distance to retrain on the forget set (reported in E2URec's mechanism)."""
  d = probe.distances(name)
  return {'sym_kl': d['sym_kl'], 'jsd': d['jsd']}


def _record(section) -> dict:
  return {'w': section.w, 'use_remember_teacher': bool(section.use_remember_teacher)}


SPEC = register(MethodSpec(
    name=NAME,
    summary='diagnostic: E2URec distilled towards the retrained model on the forget set (needs retrain)',
    defaults={}, rules={}, trainable='lora', loss=e2urec.e2urec_loss_fn, static=_static, batches=_batches,
    hparams=_hparams, frozen=_teachers, record=_record, diagnostic=_distance, same_as=e2urec.SPEC.name,
    chainable=False, in_default=False,
    # The retrained model is read, not trained for it: reported (not hidden), kept by forget requests.
    helpers=(Helper(llmrec.RETRAIN, 'recipe', ('pretrained',), _ensure_retrain, trained_on_forget=False,
                    hidden=False),)))
