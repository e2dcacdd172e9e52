"""The method contract: what an unlearning method declares, and the registry of declared methods.

A method is one module that builds a `MethodSpec` and calls `register` on it. Everything
else derives from the registry: the config gains `config.unlearn.<name>` with the spec's
defaults (`config.default_config`), `config.validate` checks that section with the spec's
rules, `run` executes and reports every registered method in registration order, and
`forget` serves the chainable ones. The one runner (`methods/runner.py`) does the phase,
the saving and the stats, so a method declares only what differs.

The registry itself is `train/registry.py` (the evaluation and the artifacts read it too);
its functions are re-exported here. This module imports nothing heavy: the CLI reads the
registry (to validate a config) before JAX is loaded.
"""
import dataclasses
from typing import Any, Callable, Protocol

from e2urec_jax import rules
from e2urec_jax.train.registry import (chainable, default_methods, featured, find, get, helpers,  # noqa: F401
                                       hidden_models, is_featured_row, method_of_row, names, register,
                                       report_order, shard_methods, specs, unregister)

# The signatures of a spec's callables. `ctx` is the run context (train/context.py RunContext),
# `section` the method's config section with a report row's overrides applied (a sweep's alpha),
# `model` the Flax model, `original` the original's parameters (a pytree), `callbacks` the
# training callbacks (train/callbacks.py).
Batch = dict  # one step's host arrays (data/tokens.make_batch's; a two-set step's {'retain': ..., 'forget': ...})
Stats = dict  # what a phase records in its done.json (time_s, steps, ...)
HparamsForStep = Callable[[int], dict]  # step -> the traced hyperparameters of that step
BatchForStep = Callable[[int], Batch]  # step -> that step's host batch
SeedOf = Callable[[str], int]  # seed phase name -> seeds.derive(run seed, method, phase)


class LossFn(Protocol):
  """The loss the compiled step differentiates with respect to `trainable` (adapters or weights):
  (loss, aux metrics). `frozen` is FrozenInputs.inputs, `hp` the step's hyperparameters ('lr',
  'weight_decay' and the spec's own)."""

  def __call__(self, trainable: Any, frozen: dict, batch: Batch, rng: Any, hp: dict) -> tuple[Any, dict]: ...


class LossBuilder(Protocol):
  """Builds the loss for `model`; its keyword arguments are the compile-time switches (`static`):
  the compiled step is cached by (builder, switches)."""

  def __call__(self, model: Any, **static: Any) -> LossFn: ...


class BatchesBuilder(Protocol):
  """The phase's batches: step -> host batch, drawn from `seed_of`'s streams."""

  def __call__(self, ctx: Any, section: Any, seed_of: SeedOf) -> BatchForStep: ...


class HparamsBuilder(Protocol):
  """step -> hyperparameters beside 'lr' and 'weight_decay' (weights, strengths, schedules):
  traced, so changing them never recompiles."""

  def __call__(self, ctx: Any, section: Any) -> HparamsForStep: ...


class StaticBuilder(Protocol):
  """The loss builder's keyword arguments (compile-time switches)."""

  def __call__(self, ctx: Any, section: Any) -> dict: ...


@dataclasses.dataclass(frozen=True)
class FrozenInputs:
  """What the loss reads besides what it trains (teachers, caches), and what building it cost."""
  inputs: dict  # name -> pytree, passed to the loss as `frozen`; never differentiated nor checkpointed
  # Seconds of work done to build them (E2URec's forget-set teacher cache): counted in the method's
  # time as its own prior ('frozen_inputs'); None when nothing was computed apart.
  build_s: float | None = None


class FrozenBuilder(Protocol):
  """The frozen inputs of the method's loss, built from the original's parameters."""

  def __call__(self, ctx: Any, section: Any, original: Any) -> FrozenInputs: ...


class RecordFn(Protocol):
  """Extra stats written with the result (alpha, w, ...)."""

  def __call__(self, section: Any) -> dict: ...


class RunFn(Protocol):
  """A method that is not one training phase (SISA, RecEraser, influence): trains, publishes the
  model `name` and writes its done.json stats, which it returns."""

  def __call__(self, ctx: Any, name: str, section: Any, seed: int, callbacks: tuple = ()) -> Stats: ...


class ExamplesPerStep(Protocol):
  """Training samples one step reads (for examples/s)."""

  def __call__(self, section: Any) -> int: ...


class Diagnostic(Protocol):
  """What the report measures of one of the method's rows on the forget set beside the distances
  (E2URec: its teacher); None when there is nothing to measure. `probe` is eval/evaluate.py's
  ForgetProbe."""

  def __call__(self, probe: Any, row: str) -> dict | None: ...


class EnsureHelper(Protocol):
  """Trains a helper model, or finds it trained; returns its stats."""

  def __call__(self, ctx: Any, callbacks: tuple = ()) -> Stats: ...


@dataclasses.dataclass(frozen=True)
class BenchStep:
  """How `bench` times the method's step on random weights and inputs (`<name>_step` in
  config.bench.what): the same compiled step as a run's, with every part of the loss on.

  The trainable part follows MethodSpec.trainable: LoRA adapters on the base, or (full) every
  weight in float32. FLOPs per step (for MFU) = forward_passes x batch x one sample's forward FLOPs."""
  loss: Callable[[Any], LossFn]  # model -> the step's loss
  # (base params, adapters, zero adapters) -> the loss's frozen inputs (teachers built from the
  # random weights: their cost per step is what is timed, not their values).
  frozen: Callable[[Any, Any, Any], dict]
  hparams: dict  # the step's own traced hyperparameters, beside 'lr' and 'weight_decay'
  # One step's FLOPs in forward passes of `batch` samples: forward + backward = 3 per trained sample.
  forward_passes: float
  paired: bool = True  # its batch is {'retain': ..., 'forget': ...} of `batch` samples each (else one batch)
  # A script under benchmarks/ that times the same step in PyTorch (its RESULT line) beside ours.
  reference: str | None = None


def paired_examples(section) -> int:
  """MethodSpec.examples_per_step's default: a retain and a forget batch of section.batch_size each."""
  return 2 * section.batch_size


TRAINABLE_KINDS = ('full', 'lora', 'shards')
STANDARD_RULES = {'learning_rate': rules.POSITIVE, 'steps': rules.POSITIVE_INT, 'batch_size': rules.POSITIVE_INT}


@dataclasses.dataclass(frozen=True)
class Helper:
  """A model a method trains (or finds trained) before its own phase, e.g. E2URec's augmented model.

  Declaring it is what lets the rest follow without naming the method: `resume.plan` plans it
  (before the method, which is built on it), the runner counts its time in the method's cost,
  `forget` deletes it where it learnt the forgotten records, the report does not list it."""
  name: str  # its phase and model folder name (phases/<name>, models/<name>)
  kind: str  # its fingerprint kind (train/fingerprint.py: 'augmented', 'recipe', ...)
  deps: tuple  # the phases whose output it reads (those a command plans; e.g. ('original',))
  ensure: EnsureHelper  # trains it, or finds it trained
  # It is trained on the forget set: a forget request deletes it (the experiment's copy where the
  # request's records were in the experiment's forget set; the request's own always).
  trained_on_forget: bool = False
  hidden: bool = True  # not a report row (a helper that is a reported model itself, retrain, says False)
  cost: str | None = None  # its time is recorded as '<cost>_time_s' in the method's stats (default: name)
  # The config field that says whether it trains adapters ('lora') or full weights ('augment.mode'):
  # config.lora.init_phases may name it, when it trains adapters. None: not a LoRA phase of its own.
  mode_key: str | None = None

  @property
  def cost_key(self) -> str:
    return self.cost or self.name


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """An unlearning method, declared. Its callables' signatures are the protocols above."""
  name: str  # method name: config.unlearn.<name>, the report row, the model folder
  summary: str  # one line for the config comment and the docs
  defaults: dict  # config.unlearn.<name>: field -> default (declared with a comment per field)
  rules: dict  # field -> rules.Rule; learning_rate/steps/batch_size get STANDARD_RULES if absent
  trainable: str  # 'full' (every weight of a copy of the original), 'lora' (adapters on it) or 'shards'
  loss: LossBuilder | None = None
  batches: BatchesBuilder | None = None  # seed_of(phase) is seeds.derive for this method and run seed
  hparams: HparamsBuilder | None = None
  static: StaticBuilder | None = None
  frozen: FrozenBuilder | None = None  # what else the loss reads, and what building it cost
  # Models trained first (`Helper`s, in order): each one's time counts in this method's cost
  # (E2URec: the augmented model).
  helpers: tuple = ()
  record: RecordFn | None = None
  run: RunFn | None = None  # a method that is not one training phase: the fields above are then unused
  seeded: bool = True  # repeated per sweep seed (config.sweep.seeds); shard methods are not
  chainable: bool = True  # `forget` can serve it: its result is one model, built on the one it started from
  examples_per_step: ExamplesPerStep = paired_examples
  # Other config sections the method's phase reads (E2URec: 'augment', its augmented model's
  # recipe): part of its fingerprint (train/fingerprint.py), so changing them retrains it.
  reads: tuple = ()
  # What the report measures of a row of this method on the forget set (E2URec: its teacher,
  # methods/teacher_mechanism.py). The probe gives any model's forget-set logits, the retrained
  # model's, the distances to it, the rows scored so far. A method with `same_as` puts its result in
  # the mechanism of the rows of that method, under its own name.
  diagnostic: Diagnostic | None = None
  # The report's section of those measurements: {row: its 'mechanism' entry} -> markdown lines.
  diagnostic_report: Callable[[dict], list] | None = None
  # Another method whose config section and seeds this one uses (config.unlearn.<same_as>, with a
  # row's overrides; seeds.derive(seed, same_as, phase)): it sees the same batches and initial
  # adapters and differs only in what its spec changes (the oracle: the forget-set target).
  same_as: str | None = None
  in_default: bool = True  # in config.unlearn.methods' default (a diagnostic-only method says False)
  # The method the project studies (one at most; E2URec): the report compares every other method with
  # it over seeds (eval/seed_report.py's summary), draws its rows in red, and the headline criteria
  # (eval/headline.py) and `sequence`'s drift note read its rows.
  featured: bool = False
  # A `run` method that applies the retrain-free stop (config.unlearn.auto) itself (influence: to
  # its CG iterations): its fingerprint reads unlearn.auto* as a method trained by steps does.
  auto_stop: bool = False
  bench: BenchStep | None = None  # what `bench` times as '<name>_step' (None: not benchmarked)

  def __post_init__(self):
    if self.trainable not in TRAINABLE_KINDS:
      raise ValueError(f'method {self.name!r}: trainable must be one of {TRAINABLE_KINDS}, not {self.trainable!r}')
    if self.run is None and (self.loss is None or self.batches is None):
      raise ValueError(f'method {self.name!r}: declare loss and batches (or run, for a method of several phases)')

  @property
  def section_name(self) -> str:
    """The config.unlearn section it reads."""
    return self.same_as or self.name

  def field_rules(self) -> dict:
    """Every field's rule: the declared ones, the standard ones for the usual fields."""
    out = {k: STANDARD_RULES[k] for k in self.defaults if k in STANDARD_RULES}
    out.update(self.rules)
    return out
