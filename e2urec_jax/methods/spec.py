"""The method contract: what an unlearning method declares, and the registry of declared methods.

A method is one module that builds a `MethodSpec` and calls `register` on it. Everything
else derives from the registry: the config gains `config.unlearn.<name>` with the spec's
defaults (`config.default_config`), `config.validate` checks that section with the spec's
rules, `run` executes and reports every registered method in registration order, and
`forget` serves the chainable ones. The one runner (`methods/runner.py`) does the phase,
the saving and the stats, so a method declares only what differs.

This module imports nothing heavy: the CLI reads the registry (to validate a config)
before JAX is loaded.
"""
import dataclasses
from typing import Callable

from e2urec_jax import rules

TRAINABLE_KINDS = ('full', 'lora', 'shards')
STANDARD_RULES = {'learning_rate': rules.POSITIVE, 'steps': rules.POSITIVE_INT, 'batch_size': rules.POSITIVE_INT}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """An unlearning method, declared.

  The callables take the run context `ctx` (train/context.py) and `section`, the method's
  config section with a report row's overrides applied (a sweep's alpha, say).
  """
  name: str  # method name: config.unlearn.<name>, the report row, the model folder
  summary: str  # one line for the config comment and the docs
  defaults: dict  # config.unlearn.<name>: field -> default (declared with a comment per field)
  rules: dict  # field -> rules.Rule; learning_rate/steps/batch_size get STANDARD_RULES if absent
  trainable: str  # 'full' (every weight of a copy of the original), 'lora' (adapters on it) or 'shards'
  # (model, **static) -> loss_fn(trainable, frozen, batch, rng, hp) -> (loss, aux). Its keyword
  # arguments are the compile-time switches: the compiled step is cached by (loss, static).
  loss: Callable | None = None
  # (ctx, section, seed_of) -> batch_for_step(step) -> host batch; seed_of(phase) is seeds.derive
  # for this method and run seed.
  batches: Callable | None = None
  # (ctx, section) -> hparams_for_step(step) -> extra traced hyperparameters beside 'lr' and
  # 'weight_decay' (weights, strengths, schedules): changing them never recompiles.
  hparams: Callable | None = None
  static: Callable | None = None  # (ctx, section) -> the loss builder's keyword arguments
  # (ctx, section, original params) -> what else the loss reads. A '_cost' entry (seconds) is work
  # done to build it (E2URec's teacher cache): counted in the method's time, not passed to the loss.
  frozen: Callable | None = None
  # (ctx, section, callbacks) -> {prerequisite name: its stats}: models trained first whose
  # time counts in this method's cost (E2URec: the augmented model).
  prepare: Callable | None = None
  record: Callable | None = None  # (section) -> extra stats written with the result (alpha, w, ...)
  # (ctx, name, section, seed, callbacks) -> stats, for a method that is not one training
  # phase (SISA, RecEraser); the fields above are then unused.
  run: Callable | None = None
  seeded: bool = True  # repeated per sweep seed (config.sweep.seeds); shard methods are not
  chainable: bool = True  # `forget` can serve it: its result is one model, built on the one it started from
  examples_per_step: Callable | None = None  # (section) -> samples per step; default 2 x batch (retain + forget)
  # Other config sections the method's phase reads (E2URec: 'augment', its augmented model's
  # recipe): part of its fingerprint (train/fingerprint.py), so changing them retrains it.
  reads: tuple = ()

  def __post_init__(self):
    if self.trainable not in TRAINABLE_KINDS:
      raise ValueError(f'method {self.name!r}: trainable must be one of {TRAINABLE_KINDS}, not {self.trainable!r}')
    if self.run is None and (self.loss is None or self.batches is None):
      raise ValueError(f'method {self.name!r}: declare loss and batches (or run, for a method of several phases)')

  def field_rules(self) -> dict:
    """Every field's rule: the declared ones, the standard ones for the usual fields."""
    out = {k: STANDARD_RULES[k] for k in self.defaults if k in STANDARD_RULES}
    out.update(self.rules)
    return out


_SPECS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
  """Adds `spec` (in report order: the order of registration); returns it."""
  if spec.name in _SPECS and _SPECS[spec.name] is not spec:
    raise ValueError(f'a method named {spec.name!r} is registered already')
  missing = sorted(set(spec.defaults) - set(spec.field_rules()))
  if missing:
    raise ValueError(f'method {spec.name!r}: no rule for config field(s) {", ".join(missing)}')
  _SPECS[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  """Removes a method (tests that register their own)."""
  _SPECS.pop(name, None)


def get(name: str) -> MethodSpec:
  return _SPECS[name]


def names() -> tuple:
  """Every registered method, in report order."""
  return tuple(_SPECS)


def specs() -> tuple:
  return tuple(_SPECS.values())


def chainable() -> tuple:
  """Methods `forget` can serve."""
  return tuple(s.name for s in _SPECS.values() if s.chainable)


def report_order() -> tuple:
  """Rows of the report in order: the original, the retrained reference, then the methods."""
  return ('original', 'retrain') + names()

