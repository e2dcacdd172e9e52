"""Scores every model in a workdir against the retrained one and writes the report.

Test set: AUC / LogLoss / ACC, and the same AUC for active and inactive users (eval/fairness.py).
Forget set: the same, the distance of each model's answer distribution to the retrained model's
(JSD, symmetric KL, L2; full vocabulary and Yes/No), and the membership-inference suite
(eval/mia.py) against test samples of users outside the forget set; its reference attack is
calibrated by the noise floor's second retrain (a model an attacker could train without the
targets) where the run has one. On both: HR@k and NDCG@k of each positive's item among sampled
unrated items (eval/ranking.py; config.eval.ranking_negatives = 0 turns them off).
"""
import os

import numpy as np
from tqdm.auto import tqdm

from e2urec_jax import distributed, runtime, storage
from e2urec_jax.scoring import per_example_loss
from e2urec_jax.eval import fairness, metrics, mia, ranking
from e2urec_jax.train import artifacts
from e2urec_jax.train.inference import iterate_eval, load_predictor


def score(ctx, predictor, split: str, indices: np.ndarray, keep_logits: bool = False, desc: str = '') -> dict:
  """p_yes [N], loss [N], 'mia': {attack: membership score [N]} (eval/mia.py, every attack but the
  reference one) and, if asked, the first-answer-position logits [N, V] of one model on a set."""
  p_yes, loss, first, attacks = [], [], [], []
  yes, no = ctx.data.yes_id, ctx.data.no_id
  chunks = iterate_eval(ctx, split, indices, with_host=True)
  for device, host, real in tqdm(chunks, desc=desc or split, leave=False, disable=not ctx.config.progress,
                                 total=-(-len(indices) // max(ctx.num_devices, ctx.config.eval.batch_size))):
    logits = predictor.logits(device)[:real]  # [batch, answer, vocab]
    p_yes.append(metrics.yes_probability(logits[:, 0], yes, no))
    loss.append(per_example_loss(logits, host['answer_labels'][:real], host['answer_mask'][:real]))
    attacks.append(mia.sample_scores(first_logits=logits[:, 0], labels=host['label'][:real], loss=loss[-1],
                                     yes_id=yes, no_id=no))
    if keep_logits:
      first.append(logits[:, 0])
  out = {'p_yes': np.concatenate(p_yes), 'loss': np.concatenate(loss),
         'mia': {k: np.concatenate([a[k] for a in attacks]) for k in (attacks[0] if attacks else ())}}
  if keep_logits:
    out['first_logits'] = np.concatenate(first)
  return out


def _quality(labels, p_yes) -> dict:
  return {'auc': metrics.auc(labels, p_yes), 'logloss': metrics.logloss(labels, p_yes),
          'acc': metrics.accuracy(labels, p_yes)}


def _distances(a_logits, b_logits, yes, no) -> dict:
  return metrics.distances_from_logits(a_logits, b_logits, yes_id=yes, no_id=no)


def evaluate_models(ctx, names: list[str], mechanism_for=None, rank: bool = True) -> dict:
  """results.json's dict for the given model names ('retrain' must be trained).

  Each row's test and forget groups get their 'ranking' (eval/ranking.py) unless `rank` is False
  or config.eval.ranking_negatives is 0.

  A row whose method declares a diagnostic (MethodSpec.diagnostic: E2URec's teacher,
  eval/mechanism.py) gets it in its 'mechanism': every such row (`mechanism_for` None), or the
  rows of `mechanism_for` and the rows of the methods declared `same_as` theirs (() measures none)."""
  data = ctx.data
  train, test = data.splits['train'], data.splits['test']
  forget = np.flatnonzero(train.is_forget)
  forget_users = np.unique(train.user_id[forget])
  nonmember = np.flatnonzero(~np.isin(test.user_id, forget_users))
  all_test = np.arange(len(test.label))
  yes, no = data.yes_id, data.no_id
  reference = load_predictor(ctx, 'retrain')
  ref_forget = score(ctx, reference, 'train', forget, keep_logits=True, desc='retrain/forget')
  ref_nonmember = score(ctx, reference, 'test', nonmember, desc='retrain/nonmember')
  results = {'methods': {}, 'noise_floor': None}
  twin = twin_nonmember = None
  if storage.isdir(ctx.model_dir('retrain_seed2')):
    twin_model = load_predictor(ctx, 'retrain_seed2')
    twin = score(ctx, twin_model, 'train', forget, keep_logits=True, desc='noise floor')
    twin_nonmember = score(ctx, twin_model, 'test', nonmember, desc='noise floor/nonmember')
    d = _distances(twin['first_logits'], ref_forget['first_logits'], yes, no)
    results['noise_floor'] = {k: d[k] for k in ('jsd', 'sym_kl', 'l2', 'jsd_yesno', 'l2_yesno')}
  forget_first = {}
  results['mia'] = {'attacks': list(mia.ATTACKS), 'reference_model': 'retrain_seed2' if twin is not None else None,
                    'target': 'retrain', 'members': int(len(forget)), 'nonmembers': int(len(nonmember))}
  active, results['fairness'] = fairness.activity_split(train.user_id, test.user_id)
  candidates = ranking.build(ctx) if rank else None  # the same lists for every model
  if candidates is not None:
    results['ranking'] = ranking.info(ctx, candidates)
  for name in names:
    predictor = reference if name == 'retrain' else load_predictor(ctx, name)
    on_test = score(ctx, predictor, 'test', all_test, desc=f'{name}/test')
    on_forget = ref_forget if name == 'retrain' else score(ctx, predictor, 'train', forget, keep_logits=True,
                                                             desc=f'{name}/forget')
    forget_first[name] = on_forget['first_logits']
    nonmember_loss = on_test['loss'][nonmember]
    dist = _distances(on_forget['first_logits'], ref_forget['first_logits'], yes, no)
    forget_metrics = _quality(train.label[forget], on_forget['p_yes'])
    forget_metrics.update({k: dist[k] for k in ('jsd', 'sym_kl', 'l2', 'jsd_yesno', 'l2_yesno')})
    forget_metrics['mia_auc'] = metrics.mia_auc(on_forget['loss'], nonmember_loss)
    forget_metrics['mia_ref_auc'] = metrics.mia_ref_auc(on_forget['loss'], ref_forget['loss'], nonmember_loss,
                                                        ref_nonmember['loss'])
    member_scores = dict(on_forget['mia'])
    nonmember_scores = {k: v[nonmember] for k, v in on_test['mia'].items()}
    if twin is not None:  # calibrated by a model trained without the targets (the attacker's reference)
      member_scores['reference'] = mia.scores('reference', loss=on_forget['loss'], ref_loss=twin['loss'])
      nonmember_scores['reference'] = mia.scores('reference', loss=nonmember_loss, ref_loss=twin_nonmember['loss'])
    row = {'test': _quality(test.label, on_test['p_yes']), 'forget': forget_metrics,
           'mia': mia.aucs(member_scores, nonmember_scores),
           'fairness': fairness.group_auc(test.label, on_test['p_yes'], active)}
    if candidates is not None:
      ranked = ranking.measure(ctx, candidates, predictor)
      row['test']['ranking'], row['forget']['ranking'] = ranked['test'], ranked['forget']
    stats = artifacts.read_done(ctx.phase_dir(name)) or {}
    for key in ('time_s', 'unlearn_time_s', 'compile_s', 'trainable_params', 'trainable_fraction',
                'checkpoint_bytes', 'peak_memory_bytes'):
      row[key] = stats.get(key)
    row['phase'] = {k: v for k, v in stats.items() if k not in row}
    results['methods'][name] = row
  _add_diagnostics(ctx, results['methods'], forget_first, ref_forget['first_logits'], forget,
                   _measured(names, mechanism_for))
  fairness.with_gap_change(results['methods'])
  return results


class ForgetProbe:
  """What a method's diagnostic (MethodSpec.diagnostic) reads on the forget set: any model's
  first-answer logits [N, V] (`logits(name)`: the rows scored already, else scored once; None for
  a model the run has not), the retrained model's (`retrain`), the labels and users of the forget
  rows, the rows scored so far (`rows`, results.json's entries) and eval/mechanism.py (`measures`)."""

  def __init__(self, ctx, rows: dict, forget_first: dict, retrain_first, forget):
    from e2urec_jax.eval import mechanism
    train = ctx.data.splits['train']
    self.ctx, self.rows, self.retrain, self.measures = ctx, rows, retrain_first, mechanism
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

  def distances(self, name: str) -> dict:
    """The distances of model `name` to the retrained one on the forget set (as the rows' 'forget')."""
    return _distances(self.logits(name), self.retrain, self.yes_id, self.no_id)


def _measured(names, mechanism_for) -> list[str]:
  """The rows whose diagnostic is measured (evaluate_models' `mechanism_for`)."""
  from e2urec_jax.train import registry
  if mechanism_for is None:
    return list(names)
  listed = [n for n in names if n in mechanism_for]
  methods = {registry.method_of_row(n).name for n in listed if registry.method_of_row(n) is not None}
  return [n for n in names if n in listed or getattr(registry.method_of_row(n), 'same_as', None) in methods]


def _add_diagnostics(ctx, rows: dict, forget_first: dict, retrain_first, forget, names) -> None:
  """Each row's method diagnostic (MethodSpec.diagnostic) into its 'mechanism'; a method declared
  `same_as` another puts its result in the mechanism of that method's rows, under its own name."""
  from e2urec_jax.train import registry
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
  from e2urec_jax.train import registry
  hidden = set(registry.hidden_models()) | {'retrain_seed2'}
  models_dir = os.path.join(ctx.workdir, 'models')
  found = sorted(storage.listdir(models_dir)) if storage.isdir(models_dir) else []
  return [n for n in found if n not in hidden and not n.startswith('.')
          and artifacts.read_done(ctx.phase_dir(n)) is not None]


def merge_seed_rows(methods: dict) -> dict:
  """'m[seed=s]' rows fold into 'm' (the run at config.seed): the mean, with each seed kept under 'seeds'."""
  from e2urec_jax.eval import report
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
  from e2urec_jax.eval import trajectory
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
  from e2urec_jax.eval import report
  ordered = report.ordered_methods(names, order)
  results = evaluate_models(ctx, ordered, mechanism_for=mechanism_for)
  if ctx.config.eval.relearn.enabled:  # every row's copy fine-tuned again (eval/relearn.py)
    from e2urec_jax.eval import relearn
    relearn.attach(ctx, results, ordered)
  results['methods'] = merge_seed_rows(results['methods'])
  found = trajectories(ctx, ordered)
  results['trajectories'] = {str(ctx.config.seed): found} if found else {}
  results['seeds'] = [int(ctx.config.seed)]
  results['config'] = runtime.config_to_json(ctx.config)
  results['env'] = report.env_info()
  results.update(extra or {})
  if write:
    from e2urec_jax.eval import seed_report
    results['summary'] = seed_report.summary(results)
  if write and distributed.is_primary():  # every process scores (the mesh spans them all); one writes
    report.write_report(ctx.workdir, results, order=order)
  return results
