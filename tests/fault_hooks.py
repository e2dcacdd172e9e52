"""Fault injection for the reliability tests: a `Callback` the tests hand to a command.

  kill_at='original:6'      SIGKILL right after step 6 of phase 'original' (after its checkpoint, if one was due)
  kill_in_save='original:8' SIGKILL inside the save of step 8: data written, not yet committed
  nan_lr_at='original:6'    step 6 runs with a NaN learning rate (the weights turn NaN)
  disk_full_at='toy:8'      the save of step 8 fails with ENOSPC when orbax commits it

  kill_in='e2urec_jax.forget_scrub:_filter_tokens'   SIGKILL when that function is called
  kill_in='e2urec_jax.local_files:publish@/data'     ... only when one of its arguments ends with '/data'
  kill_signal='TERM'                                 kill_in sends SIGTERM instead (what `kill` or a scheduler sends)

A spec is [phase:]step; without a phase the hook fires in every phase. kill_in (E2UREC_TEST_KILL_IN)
patches the module's function (install_kill_in) instead: the stages of a command that are not
training steps (a forget request's scrub, its deletions, its audit). Subprocess tests run
`tests/fault_cli.py`, which reads these from E2UREC_TEST_* variables and calls the CLI with
the hook; the package itself never reads them.
"""
import errno
import math
import os
import signal

from e2urec_jax.train.callbacks import Callback

KILL_IN_ENV = 'E2UREC_TEST_KILL_IN'
KILL_SIGNAL_ENV = 'E2UREC_TEST_KILL_SIGNAL'  # the signal kill_in sends (a name: TERM, INT; default KILL)
ENV = {'kill_at': 'E2UREC_TEST_KILL_AT_STEP', 'kill_in_save': 'E2UREC_TEST_KILL_IN_SAVE',
       'nan_lr_at': 'E2UREC_TEST_NAN_LR_AT_STEP', 'disk_full_at': 'E2UREC_TEST_DISK_FULL_AT'}


def _fires(spec: str | None, phase: str, step: int) -> bool:
  if not spec:
    return False
  want_phase, _, want_step = spec.rpartition(':')
  return int(want_step) == int(step) and (not want_phase or want_phase == phase)


def kill_self(signum: int = signal.SIGKILL) -> None:
  """What kill -9 (or kill -`signum`) does to this process."""
  os.kill(os.getpid(), signum)


class Faults(Callback):

  def __init__(self, kill_at=None, kill_in_save=None, nan_lr_at=None, disk_full_at=None):
    self.kill_at, self.kill_in_save, self.nan_lr_at, self.disk_full_at = kill_at, kill_in_save, nan_lr_at, disk_full_at

  @classmethod
  def from_env(cls) -> 'Faults':
    return cls(**{k: os.environ.get(v) or None for k, v in ENV.items()})

  def hparams(self, phase, step, hp):
    return dict(hp, lr=math.nan) if _fires(self.nan_lr_at, phase, step) else hp

  def after_step(self, event):
    if _fires(self.kill_at, event.phase, event.step):
      kill_self()

  def checkpoint_path_class(self, phase):
    if not (self.kill_in_save or self.disk_full_at):
      return None
    import orbax.checkpoint as ocp  # here: a kill_in test of a light module starts without it (seconds)
    faults = self

    class FaultyCommit(ocp.path.atomicity.AtomicRenameTemporaryPath):
      """orbax's own commit (the rename of the written folder), failing at the chosen step."""

      async def finalize(self, *args, **kwargs):
        step = os.path.basename(str(self.get_final()))  # a step's folder (also called for its items)
        if step.isdigit() and _fires(faults.kill_in_save, phase, int(step)):
          kill_self()
        if step.isdigit() and _fires(faults.disk_full_at, phase, int(step)):
          raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return await super().finalize(*args, **kwargs)
    return FaultyCommit


def install_kill_in(spec: str | None, signal_name: str | None = None) -> None:
  """Patches `module:function[@suffix]` to SIGKILL this process (or send it SIG`signal_name`) when called
  (with an argument ending with `suffix`, if given): the module's own calls go through its attribute, so
  they see the patch."""
  if not spec:
    return
  signum = getattr(signal, 'SIG' + signal_name) if signal_name else signal.SIGKILL
  import functools
  import importlib
  target, _, suffix = spec.partition('@')
  module_name, _, name = target.partition(':')
  module = importlib.import_module(module_name)
  original = getattr(module, name)

  @functools.wraps(original)
  def killing(*args, **kwargs):
    if not suffix or any(str(a).endswith(suffix) for a in (*args, *kwargs.values())):
      kill_self(signum)
    return original(*args, **kwargs)
  setattr(module, name, killing)
