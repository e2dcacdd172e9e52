"""Hooks into every training phase's loop: per-step measurements, and the tests' fault injection.

Commands take `callbacks=(...)` and hand them to every phase they run; the loop calls each
hook of each callback at a fixed point of every step. Subclass `Callback` and override what
you need. Typical uses: score the model every N steps (`after_step`: `event.model()` gives
(params, adapters) for `train.inference.SingleModel(event.ctx, params, adapters)`), or, in the
tests, kill the process at a step or inside a checkpoint save.
"""
import dataclasses
from typing import Any, Callable


@dataclasses.dataclass
class StepEvent:
  """A finished step. `trainable` is valid only during the call (the next step donates it)."""
  phase: str  # the phase's name: 'original', 'augmented', 'e2urec', 'sisa/shard0', ...
  step: int  # steps done (1 after the first), the checkpoint of this step already saved if one was due
  num_steps: int
  trainable: Any  # the trained tree on the mesh: full weights or adapters
  # () -> (params, adapters): the model as evaluation runs it (train/inference.py), whatever
  # is trained (full weights with zero adapters, or the frozen base with the adapters).
  model: Callable[[], tuple] | None = None
  ctx: Any = None  # the RunContext the phase runs in (data, model, mesh), to score the model with


class Callback:
  """No-op hooks; override any."""

  def hparams(self, phase: str, step: int, hp: dict) -> dict:
    """The hyperparameters step `step` (counting from 1) of `phase` runs with."""
    return hp

  def after_step(self, event: StepEvent) -> None:
    """Called after every step (and after its checkpoint, when one was saved)."""

  def checkpoint_path_class(self, phase: str):
    """An orbax `ocp.path.atomicity.AtomicRenameTemporaryPath` subclass for this phase's resume
    checkpoints (the public `CheckpointManagerOptions.temporary_path_class`), or None for orbax's
    own. Its `finalize` commits a save: a test can fail or interrupt a save there."""
    return None


def checkpoint_path_class(callbacks, phase: str):
  """The first path class a callback asks for (None: orbax's default)."""
  for cb in callbacks:
    cls = cb.checkpoint_path_class(phase)
    if cls is not None:
      return cls
  return None
