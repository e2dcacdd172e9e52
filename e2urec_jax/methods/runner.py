"""Runs a registered method: a `MethodSpec` -> one `PhasePlan` -> train/runner.run_plan.

Also the rows of `run`'s report: every method of config.unlearn.methods, then the sweep,
ablation and seed rows (config.sweep), each a (row name, method, section overrides, seed).
"""
import dataclasses

from e2urec_jax import rules, seeds
from e2urec_jax.errors import UserError
from e2urec_jax.methods import auto_stop, common, llmrec, spec as spec_lib
from e2urec_jax.train import fingerprint, runner
from e2urec_jax.train.paths import ORIGINAL

FROZEN_WORK = 'frozen_inputs'  # the prior under which building the frozen inputs is counted
ABLATIONS = {'no_forget_teacher': {'use_forget_teacher': False},
             'no_remember_teacher': {'use_remember_teacher': False}}


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the report: `method` run under the name `name`."""
  name: str
  method: str
  overrides: tuple = ()  # (field, value) pairs applied to config.unlearn.<method>
  seed: int | None = None  # None: config.seed


def section_of(config, method: str, overrides=()):
  """config.unlearn.<method> with a row's overrides applied (a copy: the config is not touched); a
  method declared `same_as` another reads that one's section."""
  section = config.unlearn[spec_lib.get(method).section_name].copy_and_resolve_references()
  for key, value in dict(overrides).items():
    section[key] = value
  return section


def method_fields(config, method: str, section, seed) -> dict:
  """The fingerprint fields of a phase of `method` (train/fingerprint.py): the one place they are
  computed, for the phase itself and for `resume`'s checks before a run."""
  spec = spec_lib.get(method)
  # A `same_as` method trains with that method's section: its fields are recorded under that name.
  return fingerprint.fields(config, fingerprint.METHOD, method=spec.section_name, section=section, reads=spec.reads,
                            seed=seed, stepped=spec.run is None or spec.auto_stop, adapters=spec.trainable == 'lora')


def run_method(ctx, method: str, *, name: str | None = None, overrides=(), seed: int | None = None,
               callbacks=()) -> dict:
  """Trains (or finds trained) `method` under `name` (default: the method's); returns its stats."""
  spec = spec_lib.get(method)
  name = name or method
  seed = ctx.config.seed if seed is None else int(seed)
  section = section_of(ctx.config, method, overrides)
  stats = runner.done(ctx, name, fingerprint.record(method_fields(ctx.config, method, section, seed),
                                                    {'data': ctx.data.digest}))
  if stats is not None:
    return stats
  if spec.run is not None:
    return spec.run(ctx, name, section, seed, callbacks)
  llmrec.ensure_original(ctx, callbacks)
  prior = {h.cost_key: h.ensure(ctx, callbacks) for h in spec.helpers}  # their time is part of the cost
  role = spec.section_name  # a `same_as` method: that method's seeds and initial adapters
  seed_of = lambda phase: seeds.derive(seed, role, phase)  # noqa: E731
  original = ctx.load_params(ORIGINAL)
  built = spec.frozen(ctx, section, original) if spec.frozen is not None else spec_lib.FrozenInputs({})
  if not isinstance(built, spec_lib.FrozenInputs):
    raise TypeError(f'method {method!r}: MethodSpec.frozen must return spec.FrozenInputs, not {type(built).__name__}')
  frozen = built.inputs
  if built.build_s is not None:  # work done to build the frozen inputs (E2URec's teacher cache) is part of the cost
    prior = {**prior, FROZEN_WORK: {'time_s': built.build_s, 'compile_s': 0.0}}
  if spec.trainable == 'full':
    trainable = original
  else:
    trainable = ctx.new_adapters(original, seed_of('init'), role)
  extra_hp = spec.hparams(ctx, section) if spec.hparams is not None else (lambda step: {})
  un = ctx.config.unlearn  # AdamW decay and clipping are shared by every method
  base_hp = common.hparams(section.learning_rate, un.weight_decay)
  static = spec.static(ctx, section) if spec.static is not None else {}
  examples = spec.examples_per_step(section)
  plan = runner.PhasePlan(
      name=name, kind=spec.trainable, step=ctx.train_step(spec.loss, max_grad_norm=un.max_grad_norm, **static),
      start=original, trainable=trainable, frozen=frozen, batch_for_step=spec.batches(ctx, section, seed_of),
      hparams_for_step=lambda step: {**base_hp(step), **extra_hp(step)}, num_steps=section.steps,
      examples_per_step=examples, base_dir=ctx.model_dir(ORIGINAL), seed=seed_of('dropout'),
      save='full' if spec.trainable == 'full' else 'adapters', prior=prior,
      extra={**(spec.record(section) if spec.record is not None else {}), 'seed': seed,
             **({'section': f'unlearn.{role}'} if spec.same_as else {}),
             **common.init_record(ctx, spec.trainable, role)})
  plan = auto_stop.apply(ctx, plan)
  return runner.run_plan(ctx, plan, callbacks)


# ------------------------------------------------------------------ the rows of `run`
def parse_list(text: str, key: str, kind=str) -> list:
  items = rules.split_list(text)
  try:
    return [kind(t) for t in items]
  except ValueError:
    raise UserError(f'config.{key}={text!r}: cannot read it as a comma-separated list of {kind.__name__}')


def check_methods(names: list[str], key: str) -> list[str]:
  known = spec_lib.names()
  for name in names:
    if name not in known:
      raise UserError(f'config.{key}={name!r}: unknown method; choose from {", ".join(known)}')
  return names


def rows(config) -> list[Row]:
  """Every row `run` reports: the methods, then config.sweep's E2URec rows and seed repeats."""
  methods = check_methods(parse_list(config.unlearn.methods, 'unlearn.methods'), 'unlearn.methods')
  out = [Row(m, m) for m in methods]
  for a in parse_list(config.sweep.alphas, 'sweep.alphas', float):
    out.append(Row(f'e2urec[alpha={a:g}]', 'e2urec', (('alpha', a),)))
  for w in parse_list(config.sweep.ws, 'sweep.ws', float):
    out.append(Row(f'e2urec[w={w:g}]', 'e2urec', (('w', w),)))
  for ablation in parse_list(config.sweep.ablations, 'sweep.ablations'):
    if ablation not in ABLATIONS:
      raise UserError(f'config.sweep.ablations={ablation!r}: unknown ablation; use {", ".join(ABLATIONS)}')
    out.append(Row(f'e2urec[{ablation}]', 'e2urec', tuple(ABLATIONS[ablation].items())))
  for seed in parse_list(config.sweep.seeds, 'sweep.seeds', int):
    out += [Row(f'{m}[seed={seed}]', m, seed=seed) for m in methods if spec_lib.get(m).seeded]
  return out


def run_row(ctx, row: Row, callbacks=()) -> dict:
  return run_method(ctx, row.method, name=row.name, overrides=row.overrides, seed=row.seed, callbacks=callbacks)
