"""`TimedJit`: a jitted function compiled ahead of time per input signature, its compile seconds counted.

Its own module so that both the steps that build one (train/steps.py) and the loop that
reads its clock (train/loop.py) import it from below.
"""
import time

import jax


class TimedJit:
  """A jitted function compiled ahead of time per input signature, with compile seconds counted."""

  def __init__(self, jitted):
    self.jitted = jitted  # the jitted function itself (the bench times it through JAX's own cache)
    self._compiled = {}
    self.compile_s = 0.0

  def __call__(self, *args):
    key = tuple((tuple(x.shape), str(x.dtype)) if hasattr(x, 'shape') else x for x in jax.tree.leaves(args))
    fn = self._compiled.get(key)
    if fn is None:
      start = time.perf_counter()
      fn = self.jitted.lower(*args).compile()
      self.compile_s += time.perf_counter() - start
      self._compiled[key] = fn
    return fn(*args)
