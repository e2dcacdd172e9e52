"""Seeds: one function derives every training seed from (seed, method, phase)."""
import itertools

import pytest

from e2urec_jax import seeds

RUN = ('pretrained', 'original', 'retrain', 'retrain_seed2', 'augmented', 'e2urec', 'neggrad', 'badt', 'ga', 'npo',
       'receraser', *(f'{m}/shard{k}' for m in ('sisa', 'receraser') for k in range(4)))


def test_derive_is_a_pure_function_of_seed_method_and_phase():
  assert seeds.derive(42, 'e2urec', 'init') == seeds.derive(42, 'e2urec', 'init')
  with pytest.raises(ValueError, match="seed phase '': a non-empty name"):
    seeds.derive(42, 'e2urec', '')


def test_a_new_method_and_phase_get_their_own_stream_without_an_edit_here():
  """A method's own phase (RecEraser's 'attention', a new method's) is drawn like the listed ones:
  the same stream as before this rule (the pinned value), stable, and apart from every other."""
  assert 'attention' not in seeds.PHASES
  assert seeds.derive(42, 'receraser', 'attention') == 1553054425  # the stream RecEraser always had
  new = seeds.derive(42, 'my_method', 'my_phase')
  assert new == seeds.derive(42, 'my_method', 'my_phase') and 0 <= new < 2 ** 31
  assert new not in {seeds.derive(42, m, p) for m in (*RUN, 'my_method') for p in seeds.PHASES}


def test_values_are_fixed():
  """A changed derivation changes every number of every run: it must be a decision, not an accident."""
  assert [seeds.derive(42, 'e2urec', p) for p in ('init', 'dropout')] == [260568593, 492651387]


def test_no_two_streams_of_a_run_collide_and_every_seed_fits_31_bits():
  values = [seeds.derive(s, m, p) for s, m, p in itertools.product((42, 43), RUN, (*seeds.PHASES, 'attention'))]
  assert len(set(values)) == len(values)
  assert all(0 <= v < 2 ** 31 for v in values)
