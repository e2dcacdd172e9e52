"""Sequential deletion requests: the plan, the data each request sees, the report (eval/sequence_report.py;
the shrunk run on the shared demo run is in test_experiment.py, with the other tests of that run)."""
import numpy as np
import pytest

from e2urec_jax import sequence
from e2urec_jax.eval import sequence_report
from e2urec_jax.errors import UserError


def test_requests_are_disjoint_seeded_and_sized_by_the_train_users():
  forget = np.arange(100, 120)
  reqs = sequence.plan_requests(forget, 100, requests=4, fraction=0.05, seed=3)
  assert [len(r) for r in reqs] == [5] * 4  # round(0.05 * 100 train users)
  flat = np.concatenate(reqs)
  assert len(set(flat.tolist())) == 20 and set(flat.tolist()) <= set(forget.tolist())
  again = sequence.plan_requests(forget, 100, requests=4, fraction=0.05, seed=3)
  assert all((a == b).all() for a, b in zip(reqs, again))
  other = sequence.plan_requests(forget, 100, requests=4, fraction=0.05, seed=4)
  assert any((a != b).any() for a, b in zip(reqs, other))
  with pytest.raises(UserError, match=r'config.sequence.requests=5 x 5 users .* need 25 forget users, the run has 20'):
    sequence.plan_requests(forget, 100, requests=5, fraction=0.05, seed=3)
  with pytest.raises(UserError, match='rounds to 0 users'):
    sequence.plan_requests(forget, 100, requests=1, fraction=0.001, seed=3)


def test_retrain_points_and_the_data_of_a_request():
  assert sequence.retrain_points(5, 1) == [1, 2, 3, 4, 5]
  assert sequence.retrain_points(5, 2) == [2, 4, 5]
  assert sequence.retrain_points(3, 7) == [3]
  from e2urec_jax.data import SplitArrays, TokenizedData
  n = 6
  train = SplitArrays(prompt_ids=np.arange(n * 2).reshape(n, 2), prompt_len=np.full(n, 2), label=np.arange(n) % 2,
                      user_id=np.array([1, 1, 2, 3, 3, 4]), item_id=np.arange(n), is_forget=np.zeros(n, bool),
                      sisa_shard=np.zeros(n, np.int32), receraser_shard=np.zeros(n, np.int32))
  data = TokenizedData(layout='encoder-decoder', splits={'train': train}, answers={}, yes_id=0, no_id=1, pad_id=0,
                       decoder_start_id=0, bucket_lengths=(2,))
  # Request 2 = user 3, after user 1 was requested: user 1's rows are gone, user 3's are the forget set.
  step = sequence.with_train(data, ~np.isin(train.user_id, [1]), np.isin(train.user_id, [3]))
  t = step.splits['train']
  assert t.user_id.tolist() == [2, 3, 3, 4] and t.is_forget.tolist() == [False, True, True, False]
  assert t.item_id.tolist() == [2, 3, 4, 5] and t.prompt_ids.shape == (4, 2)
  assert data.splits['train'].user_id.tolist() == [1, 1, 2, 3, 3, 4]  # the run's data is untouched


def _row(jsd, auc, mia, t):
  return {'forget': {'jsd': jsd}, 'test': {'auc': auc}, 'mia': {'loss': mia}, 'cumulative_time_s': t}


def _out(seed, shift=0.0):
  steps = [{'request': 1, 'retrained': True, 'methods': {'retrain': _row(0.0, 0.7, 0.6, 5.0),
                                                         'e2urec': _row(0.01 + shift, 0.71, 0.62, 2.0)}},
           {'request': 2, 'retrained': False, 'methods': {'e2urec': _row(None, 0.70, 0.61, 4.0)}},
           {'request': 3, 'retrained': True, 'methods': {'retrain': _row(0.0, 0.69, 0.58, 11.0),
                                                         'e2urec': _row(0.015 + shift, 0.70, 0.6, 6.0)}}]
  return {'sequence': {'requests': 3, 'fraction': 0.04, 'retrain_every': 2, 'retrained_after': [2, 3],
                       'methods': ['e2urec'], 'users_per_request': 2, 'forget_selection': 'random', 'seed': seed},
          'steps': steps, 'chain': {'e2urec': {'result_bytes_per_request': [1024] * 3, 'adapters': True,
                                               'served_model_bytes': 10240, 'stacked_adapter_bytes': 3072,
                                               'latency': {'rows': 64, 'merged_ms_per_row': 0.1,
                                                           'stacked_ms_per_row': 0.125, 'stacked_rank': 48,
                                                           'max_abs_logit_difference': 2e-6}}},
          'time_s': 12.0}


def test_report_drift_and_summary(tmp_path):
  out = _out(1)
  assert 'is 0.01000 after request 1 and 0.01500 after request 3 (+0.00500, +50%)' in sequence_report.drift_note(out)
  paths = sequence_report.write_report(str(tmp_path), out)
  md = open(paths['sequence.md']).read()
  assert '| 2 | `e2urec` | – |' in md  # no retrain after request 2: no distance
  assert '0.6200 (0.6000)' in md  # the MIA value beside retrain's
  assert 'Stacked instead, the chain would keep 3 KB of adapters' in md
  assert '0.100 ms a row merged, 0.125 ms stacked (rank 48)' in md
  assert open(paths['sequence.png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  summary = sequence_report.summarize([out, _out(2, shift=0.01)])
  assert '| 1 | `e2urec` | 0.01500 ± 0.00707 | 0.7100 ± 0.0000 |' in summary and 'seeds 1, 2' in summary


def test_sequence_methods_must_be_chainable():
  from e2urec_jax import config as config_lib
  c = config_lib.default_config()
  c.sequence.methods = 'e2urec,sisa'
  with pytest.raises(UserError, match=r"config.sequence.methods='e2urec,sisa'"):
    config_lib.validate(c)
  c.sequence.methods = 'e2urec'
  c.sequence.retrain_every = 0
  with pytest.raises(UserError, match='config.sequence.retrain_every=0'):
    config_lib.validate(c)


def test_a_bucket_workdir_is_refused_before_any_work():
  from e2urec_jax import config as config_lib
  with pytest.raises(UserError, match='sequence needs a local --workdir, not gs://b/run'):
    sequence.run_sequence(config_lib.default_config(), 'gs://b/run')
