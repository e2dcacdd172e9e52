"""Seeds: one function derives every training seed from (seed, method, phase)."""
import pytest

from e2urec_jax import seeds


def test_derive_is_a_pure_function_of_seed_method_and_phase():
  assert seeds.derive(42, 'e2urec', 'init') == seeds.derive(42, 'e2urec', 'init')
  assert isinstance(seeds.derive(42, 'e2urec', 'dropout'), int)
  with pytest.raises(ValueError, match='unknown seed phase'):
    seeds.derive(42, 'e2urec', 'initialisation')


def test_other_seeds_give_other_streams():
  for method in ('original', 'augmented', 'e2urec', 'sisa/shard1'):
    for phase in seeds.PHASES:
      assert seeds.derive(1, method, phase) != seeds.derive(2, method, phase), (method, phase)


def test_the_training_seeds_of_a_run_are_what_its_phases_used_before_derivation():
  """Kept until the seeds are hashed: the offsets the phases used before they were derived here."""
  s = 42
  assert [seeds.derive(s, 'original', p) for p in ('init', 'batches', 'dropout')] == [s, s, s]
  assert seeds.derive(s, 'retrain_seed2', 'batches') == s + 1
  assert seeds.derive(s, 'augmented', 'init') == seeds.derive(s, 'augmented', 'batches') == s + 2
  assert seeds.derive(s, 'e2urec', 'init') == s + 3
  assert seeds.derive(s, 'neggrad', 'retain_batches') == seeds.derive(s, 'neggrad', 'dropout') == s
  assert seeds.derive(s, 'npo', 'forget_batches') == s + 1
  assert seeds.derive(s, 'receraser/shard3', 'batches') == seeds.derive(s, 'sisa/shard3', 'batches') == s + 13
