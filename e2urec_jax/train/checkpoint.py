"""Resume checkpoints (orbax): trainable tree, optimizer state, best-so-far, step, bookkeeping.

Saves are synchronous and atomic (orbax writes a temp folder and renames it), so a run
killed at any moment resumes from the last finished save. The frozen base is never
saved here: the metadata holds its content hash, checked on restore.
"""
import os

import jax
import orbax.checkpoint as ocp

from e2urec_jax.errors import UserError


class ResumeCheckpoints:

  def __init__(self, directory: str, *, max_to_keep: int, base_sha256: str | None):
    self.directory = os.path.abspath(directory)
    self.base_sha256 = base_sha256
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=False, cleanup_tmp_directories=True)
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    except OSError as e:
      raise UserError(f'cannot create checkpoint folder {self.directory}: {e.strerror}; '
                      'check the workdir is writable and has free space')

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    meta = dict(meta, step=int(step), base_sha256=self.base_sha256)
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
      self._manager.wait_until_finished()
    except OSError as e:
      raise UserError(f'checkpoint save at step {step} failed in {self.directory}: {e.strerror or e}; '
                      'free disk space and rerun the same command (the previous checkpoint is intact)')

  def restore(self, abstract_state):
    """(state, meta) of the latest checkpoint; refuses one written for another base model."""
    step = self._manager.latest_step()
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    if self.base_sha256 and meta.get('base_sha256') and meta['base_sha256'] != self.base_sha256:
      raise UserError(f'{self.directory} holds checkpoints of another base model (hash mismatch); '
                      'use a fresh --workdir or delete that folder')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except (ValueError, KeyError) as e:
      raise UserError(f'{self.directory}: checkpoint at step {step} does not match this model/config '
                      f'({str(e).splitlines()[0][:200]}); use a fresh --workdir or delete that folder')
    return restored['state'], meta

  def close(self):
    self._manager.close()
