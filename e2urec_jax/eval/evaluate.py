"""Scores every model in a workdir against the retrained one and writes the report.

Test set: AUC / LogLoss / ACC, and the same AUC for active and inactive users (eval/fairness.py).
Forget set: the same, the distance of each model's answer distribution to the retrained model's
(JSD, symmetric KL, L2; full vocabulary and Yes/No), and the membership-inference suite
(eval/mia.py) against test samples of users outside the forget set; its reference attack is
calibrated by the noise floor's second retrain (a model an attacker could train without the
targets) where the run has one. On both: HR@k and NDCG@k of each positive's item among sampled
unrated items (eval/ranking.py; config.eval.ranking_negatives = 0 turns them off). Where the forget
set is part of its users (config.data.forget_unit 'interactions' or 'category'), the same users'
other samples too, apart: their retained train samples and their test samples (eval/collateral.py).
"""
import os

import numpy as np

from e2urec_jax import distributed, runtime, storage
from e2urec_jax.eval import collateral as collateral_lib
from e2urec_jax.eval import fairness, metrics, mia, ranking, relearn, report, seed_report, trajectory
from e2urec_jax.eval.model_scores import score
from e2urec_jax.eval.report_schema import FORGET_KEYS
from e2urec_jax.train import artifacts, registry
from e2urec_jax.train.inference import load_predictor


def _distances(a_logits, b_logits, yes, no) -> dict:
  return metrics.distances_from_logits(a_logits, b_logits, yes_id=yes, no_id=no)


def evaluate_models(ctx, names: list[str], mechanism_for=None, rank: bool = True) -> dict:
  """results.json's dict for the given model names ('retrain' must be trained).

  Each row's test and forget groups get their 'ranking' (eval/ranking.py) unless `rank` is False
  or config.eval.ranking_negatives is 0.

  A row whose method declares a diagnostic (MethodSpec.diagnostic: E2URec's teacher,
  methods/teacher_mechanism.py) gets it in its 'mechanism': every such row (`mechanism_for` None), or the
  rows of `mechanism_for` and the rows of the methods declared `same_as` theirs (() measures none)."""
  data = ctx.data
  train, test = data.splits['train'], data.splits['test']
  forget = np.flatnonzero(train.is_forget)
  forget_users = np.unique(train.user_id[forget])
  nonmember = np.flatnonzero(~np.isin(test.user_id, forget_users))
  all_test = np.arange(len(test.label))
  yes, no = data.yes_id, data.no_id
  empty = len(forget) == 0  # every forget user deleted by forget requests: the test metrics alone
  reference = load_predictor(ctx, 'retrain')
  ref_forget = None if empty else score(ctx, reference, 'train', forget, keep_logits=True, desc='retrain/forget')
  ref_nonmember = None if empty else score(ctx, reference, 'test', nonmember, desc='retrain/nonmember')
  results = {'methods': {}, 'noise_floor': None,
             'forget_set': {'samples': int(len(forget)), 'users': int(len(forget_users))}}
  if empty:
    results['forget_set']['note'] = empty_forget_note(ctx.workdir)
  twin = twin_nonmember = None
  if storage.isdir(ctx.model_dir('retrain_seed2')) and not empty:
    twin_model = load_predictor(ctx, 'retrain_seed2')
    twin = score(ctx, twin_model, 'train', forget, keep_logits=True, desc='noise floor')
    twin_nonmember = score(ctx, twin_model, 'test', nonmember, desc='noise floor/nonmember')
    d = _distances(twin['first_logits'], ref_forget['first_logits'], yes, no)
    results['noise_floor'] = {k: d[k] for k in ('jsd', 'sym_kl', 'l2', 'jsd_yesno', 'l2_yesno')}
  forget_first = {}
  results['mia'] = {'attacks': list(mia.ATTACKS), 'reference_model': 'retrain_seed2' if twin is not None else None,
                    'target': 'retrain', 'members': int(len(forget)), 'nonmembers': int(len(nonmember))}
  active, results['fairness'] = fairness.activity_split(train.user_id, test.user_id)
  results['forget_unit'] = collateral_lib.unit_of(ctx.config)
  collateral = None
  if results['forget_unit'] != 'user':  # the forget users keep samples: scored apart (eval/collateral.py)
    collateral = collateral_lib.Collateral(ctx, reference, score)
    results['collateral'] = collateral.info()
  candidates = ranking.build(ctx) if rank else None  # the same lists for every model
  if candidates is not None:
    results['ranking'] = ranking.info(ctx, candidates)
  for name in names:
    predictor = reference if name == 'retrain' else load_predictor(ctx, name)
    on_test = score(ctx, predictor, 'test', all_test, desc=f'{name}/test')
    row = {'test': metrics.binary_metrics(test.label, on_test['p_yes']),
           'forget': dict.fromkeys(FORGET_KEYS), 'mia': dict.fromkeys(mia.ATTACKS),
           'fairness': fairness.group_auc(test.label, on_test['p_yes'], active)}
    if not empty:
      on_forget = ref_forget if name == 'retrain' else score(ctx, predictor, 'train', forget, keep_logits=True,
                                                               desc=f'{name}/forget')
      forget_first[name] = on_forget['first_logits']
      row['forget'], row['mia'] = _forget_metrics(ctx, on_forget, on_test, ref_forget, ref_nonmember,
                                                  (twin, twin_nonmember), forget, nonmember)
    if collateral is not None:
      row['collateral'] = collateral.measure(predictor, name)
    if candidates is not None:
      ranked = ranking.measure(ctx, candidates, predictor)
      row['test']['ranking'] = ranked['test']
      if 'forget' in ranked:
        row['forget']['ranking'] = ranked['forget']
    stats = artifacts.read_done(ctx.phase_dir(name)) or {}
    for key in ('time_s', 'unlearn_time_s', 'compile_s', 'trainable_params', 'trainable_fraction',
                'checkpoint_bytes', 'peak_memory_bytes'):
      row[key] = stats.get(key)
    row['phase'] = {k: v for k, v in stats.items() if k not in row}
    results['methods'][name] = row
  if not empty:  # the diagnostics read the forget set
    _add_diagnostics(ctx, results['methods'], forget_first, ref_forget['first_logits'], forget,
                     _measured(names, mechanism_for))
  fairness.with_gap_change(results['methods'])
  return results



def _forget_metrics(ctx, on_forget, on_test, ref_forget, ref_nonmember, twins, forget, nonmember):
  """(row['forget'], row['mia']) of one model: its quality on the forget set, its distances to the
  retrained model there, and the membership-inference attacks against the test non-members."""
  train, data = ctx.data.splits['train'], ctx.data
  twin, twin_nonmember = twins
  nonmember_loss = on_test['loss'][nonmember]
  dist = _distances(on_forget['first_logits'], ref_forget['first_logits'], data.yes_id, data.no_id)
  out = metrics.binary_metrics(train.label[forget], on_forget['p_yes'])
  out.update({k: dist[k] for k in ('jsd', 'sym_kl', 'l2', 'jsd_yesno', 'l2_yesno')})
  out['mia_auc'] = metrics.mia_auc(on_forget['loss'], nonmember_loss)
  out['mia_ref_auc'] = metrics.mia_ref_auc(on_forget['loss'], ref_forget['loss'], nonmember_loss,
                                           ref_nonmember['loss'])
  member_scores = dict(on_forget['mia'])
  nonmember_scores = {k: v[nonmember] for k, v in on_test['mia'].items()}
  if twin is not None:  # calibrated by a model trained without the targets (the attacker's reference)
    member_scores['reference'] = mia.scores('reference', loss=on_forget['loss'], ref_loss=twin['loss'])
    nonmember_scores['reference'] = mia.scores('reference', loss=nonmember_loss, ref_loss=twin_nonmember['loss'])
  return out, mia.aucs(member_scores, nonmember_scores)


def empty_forget_note(workdir: str) -> str:
  """What the report says of a forget set with no sample left: the forget requests that can have deleted
  its users (those that unlearnt train samples: their audits name a model; whom each forgot needs the key)."""
  forget_dir = os.path.join(workdir, 'forget')
  versions = []
  for name in sorted(storage.listdir(forget_dir)) if storage.isdir(forget_dir) else []:
    number = name[len('audit_v'):-len('.json')]
    if name.startswith('audit_v') and name.endswith('.json') and number.isdigit():
      try:
        trained = runtime.read_json(os.path.join(forget_dir, name)).get('model') is not None
      except (ValueError, AttributeError):  # a damaged audit is `audit`'s to report, not the report's
        continue
      if trained:
        versions.append(int(number))
  versions.sort()
  if not versions:
    return 'the forget set is empty: it holds no train sample; forget metrics are not computed'
  contiguous = versions == list(range(versions[0], versions[-1] + 1))
  span = f'v{versions[0]}..v{versions[-1]}' if contiguous and len(versions) > 1 else \
      ', '.join(f'v{v}' for v in versions)
  return (f'the forget set is empty: every forget user was deleted by forget requests {span}; forget metrics are '
          'not computed')


class ForgetProbe:
  """What a method's diagnostic (MethodSpec.diagnostic) reads on the forget set: any model's
  first-answer logits [N, V] (`logits(name)`: the rows scored already, else scored once; None for
  a model the run has not), the retrained model's (`retrain`), the labels and users of the forget
  rows, the rows scored so far (`rows`, results.json's entries) and the distances of any logits
  to the retrained model's (`distance_to_retrain`)."""

  def __init__(self, ctx, rows: dict, forget_first: dict, retrain_first, forget):
    train = ctx.data.splits['train']
    self.ctx, self.rows, self.retrain = ctx, rows, retrain_first
    self.labels, self.users = train.label[forget], train.user_id[forget]
    self.yes_id, self.no_id = ctx.data.yes_id, ctx.data.no_id
    self._forget, self._first = forget, dict(forget_first)

  def logits(self, name: str):
    if name not in self._first:
      if not storage.isdir(self.ctx.model_dir(name)):
        return None
      self._first[name] = score(self.ctx, load_predictor(self.ctx, name), 'train', self._forget, keep_logits=True,
                                desc=f'{name}/forget')['first_logits']
    return self._first[name]

  def distance_to_retrain(self, logits) -> dict:
    """The distances ('jsd', 'sym_kl', 'l2') of forget-set logits [N, V] to the retrained model's."""
    return metrics.distances_from_logits(logits, self.retrain)

  def distances(self, name: str) -> dict:
    """The distances of model `name` to the retrained one on the forget set (as the rows' 'forget')."""
    return _distances(self.logits(name), self.retrain, self.yes_id, self.no_id)


def _measured(names, mechanism_for) -> list[str]:
  """The rows whose diagnostic is measured (evaluate_models' `mechanism_for`)."""
  if mechanism_for is None:
    return list(names)
  listed = [n for n in names if n in mechanism_for]
  methods = {registry.method_of_row(n).name for n in listed if registry.method_of_row(n) is not None}
  return [n for n in names if n in listed or getattr(registry.method_of_row(n), 'same_as', None) in methods]


def _add_diagnostics(ctx, rows: dict, forget_first: dict, retrain_first, forget, names) -> None:
  """Each row's method diagnostic (MethodSpec.diagnostic) into its 'mechanism'; a method declared
  `same_as` another puts its result in the mechanism of that method's rows, under its own name."""
  probe = None
  for name in names:
    spec = registry.method_of_row(name)
    if spec is None or spec.diagnostic is None:
      continue
    probe = probe or ForgetProbe(ctx, rows, forget_first, retrain_first, forget)
    found = spec.diagnostic(probe, name)
    if found is None:
      continue
    if spec.same_as is None:
      rows[name]['mechanism'] = found
      continue
    for other in names:
      of = registry.method_of_row(other)
      if of is not None and of.name == spec.same_as and rows[other].get('mechanism'):
        rows[other]['mechanism'][spec.name] = found


def available_models(ctx) -> list[str]:
  """The finished models of a run's workdir worth reporting (not the helper models the methods
  declare hidden, MethodSpec.helpers, or the noise floor)."""
  hidden = set(registry.hidden_models()) | {'retrain_seed2'}
  models_dir = os.path.join(ctx.workdir, 'models')
  found = sorted(storage.listdir(models_dir)) if storage.isdir(models_dir) else []
  return [n for n in found if n not in hidden and not n.startswith('.')
          and artifacts.read_done(ctx.phase_dir(n)) is not None]


def merge_seed_rows(methods: dict) -> dict:
  """'m[seed=s]' rows fold into 'm' (the run at config.seed): the mean, with each seed kept under 'seeds'."""
  merged = {}
  for name, row in methods.items():
    base, _, rest = name.partition('[seed=')
    if rest and base in methods:
      continue
    extra = [methods[n] for n in methods if n.startswith(name + '[seed=')]
    merged[name] = report.aggregate_seeds([row, *extra]) if extra else row
  return merged


def trajectories(ctx, names) -> dict:
  """{name: points} of the rows scored during training (config.eval.trajectory_every)."""
  found = {name: trajectory.of_phase(ctx, name) for name in names}
  return {name: points for name, points in found.items() if points}


def verify_models(ctx, names) -> None:
  """artifacts.verify() for `names` and the retrained models they are scored against, before any is scored:
  a damaged model is named at once, not after the others were scored (the hashes are cached, so loading
  them later does not hash again)."""
  for name in ('retrain', 'retrain_seed2', *names):
    if storage.isdir(ctx.model_dir(name)):
      artifacts.verify(ctx.model_dir(name))


def write_results(ctx, names: list[str], order=(), *, write: bool = True, mechanism_for=None, extra=None) -> dict:
  """Scores `names` and writes the report (rows in `order` first, then the others as given);
  `write=False` returns the results alone (one seed of several: eval/seed_report.py writes).
  `mechanism_for`: the rows whose method's diagnostic is measured (evaluate_models; None: every one).
  `extra`: entries added to results.json as they are (the pretrained backbone's)."""
  ordered = report.ordered_methods(names, order)
  results = evaluate_models(ctx, ordered, mechanism_for=mechanism_for)
  if ctx.config.eval.relearn.enabled:  # every row's copy fine-tuned again (eval/relearn.py)
    relearn.attach(ctx, results, ordered)
  results['methods'] = merge_seed_rows(results['methods'])
  found = trajectories(ctx, ordered)
  results['trajectories'] = {str(ctx.config.seed): found} if found else {}
  results['seeds'] = [int(ctx.config.seed)]
  results['config'] = runtime.config_to_json(ctx.config)
  results['env'] = report.env_info()
  results.update(extra or {})
  if write:
    results['summary'] = seed_report.summary(results)
  if write and distributed.is_primary():  # every process scores (the mesh spans them all); one writes
    report.write_report(ctx.workdir, results, order=order)
  return results
