"""`forget`: serve a forget request on a trained run (its orchestration: the stages, their record, the scores).

  python -m e2urec_jax forget --users=196,305 --forget_key=KEY --workdir=DIR   (or --users=FILE, one id a line)
  python -m e2urec_jax forget --interactions=pairs.csv --forget_key=KEY --workdir=DIR   (user_id,item_id lines)
  python -m e2urec_jax forget --categories=196:Comedy --forget_key=KEY --workdir=DIR   (or a user_id,category file)

Ids are spelled as in the source data (its user/item columns), categories as its item table spells its
genres (data/item_categories.json); a category request stands for the user's ratings of the items
of that category that the workdir holds, and is served as those interactions. KEY is the operator's secret
key file, outside the workdir (--forget_key, or the E2UREC_FORGET_KEY variable; created 0600
with 32 random bytes on first use): the workdir keeps only keyed hashes of forgotten ids
(HMAC-SHA256 under that key), so nobody holding the workdir alone can tell who was forgotten
(trying every possible id gets nowhere without the key), while whoever holds the key can
verify an audit (`audit` command) and the served model can refuse forgotten users (`predict`).

A request:
1. builds its forget set: the train samples of those users (or the samples that hold those
   interactions, as target or in the shown history; a category request: the user's interactions
   with the category's items); the retain set is every other train sample;
2. runs config.unlearn.method on it, starting from the model served now: models/original
   for the first request, the last version's model (merged) after that. For E2URec it trains a
   fresh augmented model on this forget set first;
3. writes models/forget_v<N> (adapters naming their base, or full weights);
4. scores it against the model it started from (forget-set JSD, membership-inference AUC);
5. removes the records from every data file, raw copy and cache in the workdir (raw records that
   formed no sample included), deletes the models trained on them that only served unlearning
   (the helper models trained on a forget set, MethodSpec.helpers: E2URec's augmented models,
   and their phases) and every resume checkpoint;
6. writes forget/audit_v<N>.json: keyed hashes of the ids, the key's id (a hash that names the
   key without revealing it), UTC time, method, the scores, what was removed, what remains,
   and a MAC over all of it under the key.
Records that no train sample holds (only valid/test samples, or raw ratings that formed no
sample) need no unlearning: such a request only removes them (steps 5 and 6; no new model).
Each stage is recorded in forget/pending.json (keyed hashes only), so rerunning the same command
after a crash finishes the request; a different request waits until it is done.

The request's parsing is forget_request.py; the key, the keyed hashes, the audit and its checks
(`audit`, `predict`'s refusal) are forget_audit.py; the scrubbing of the data is forget_scrub.py.
"""
import contextlib
import dataclasses
import fcntl
import os

import numpy as np

from e2urec_jax import forget_audit as audit_lib, forget_category, forget_scrub as scrub, runtime, storage
from e2urec_jax.data import idfiles
from e2urec_jax.errors import UserError
from e2urec_jax.eval import metrics
from e2urec_jax.eval.model_scores import score
from e2urec_jax.forget_audit import FORGET_DIR, PENDING_FILE, unknown_id
from e2urec_jax.forget_request import Request, read_request
from e2urec_jax.methods import runner, spec
from e2urec_jax.train import artifacts, context
from e2urec_jax.train.inference import SingleModel, single_from_dir
from e2urec_jax.train.paths import Paths, run_paths


# ------------------------------------------------------------------ where the request's records are
@dataclasses.dataclass
class Found:
  """A request's records in the workdir: in samples (users/pairs: int ids), only in the raw copy
  (raw_users/raw_pairs: records that formed no sample), or forgotten before (done)."""
  users: list = dataclasses.field(default_factory=list)
  pairs: list = dataclasses.field(default_factory=list)
  raw_users: list = dataclasses.field(default_factory=list)
  raw_pairs: list = dataclasses.field(default_factory=list)
  done: list = dataclasses.field(default_factory=list)

  @property
  def any(self) -> bool:
    return bool(self.users or self.pairs or self.raw_users or self.raw_pairs)

  def scrub_users(self) -> list:
    return self.users + self.raw_users

  def scrub_pairs(self) -> list:
    return self.pairs + self.raw_pairs


def _resolve(request: Request, frames: dict, key: bytes, audits: dict, workdir: str, *,
             missing_ok: bool = False) -> Found:
  """Where the request's ids are. Ids are the source's own strings (the users/items `key` columns,
  the raw copy's fields as written) and are compared exactly: '03' is not '3'. An id neither in the
  data, nor in the raw copy, nor in an earlier audit is a UserError naming where it was given and,
  where it differs from a real id only by its spelling (leading zeros, a sign, other Unicode digits,
  spaces), suggesting that id (unless missing_ok: a resumed request whose records are already scrubbed)."""
  users, items = scrub.known_ids(frames)
  raw_users, raw_pairs = scrub.raw_records(workdir)  # the source copy in the workdir (synthetic data), as strings
  out = Found()
  if request.kind == 'users':
    for key_ in request.users:
      if key_ in users:
        out.users.append(int(users[key_]))
      elif key_ in raw_users:
        out.raw_users.append(scrub.raw_id(key_))
      elif (version := audit_lib.forgotten_by(audits, key, key_)) is not None:
        out.done.append((key_, version))
      elif not missing_ok:
        where = request.where.get(key_, '--users')
        where = '' if where == '--users' else f'{where}: '
        raise UserError(f'{where}{unknown_id("user", key_, [users, raw_users], audits, key)}')
    return out
  for ukey, ikey in request.pairs:
    if ukey in users and ikey in items:
      pair = (int(users[ukey]), int(items[ikey]))
      if any(m.any() for m in scrub.row_masks(frames, [], [pair]).values()):
        out.pairs.append(pair)
        continue
    if (ukey, ikey) in raw_pairs:
      out.raw_pairs.append((scrub.raw_id(ukey), scrub.raw_id(ikey)))  # a rating that formed no sample
      continue
    version = audit_lib.forgotten_by(audits, key, ukey, ikey)
    if version is not None:
      out.done.append((f'{ukey},{ikey}', version))
    elif not missing_ok:
      where = request.where.get((ukey, ikey))
      where = f'{where}: ' if where else ''
      raw_items = {i for _, i in raw_pairs}
      for what, id_, known in (('user', ukey, [users, raw_users]), ('item', ikey, [items, raw_items])):
        if not any(id_ in k for k in known):
          raise UserError(f'{where}{unknown_id(what, id_, known, audits, key)}')
      raise UserError(f'{where}interaction ({cut(ukey)}, {cut(ikey)}) is not in the data of this workdir (no sample '
                      'shows it, no raw record holds it, no audit names it); check the user and item ids (spelled '
                      'as in the source data)')
  return out


def cut(id_: str) -> str:
  return idfiles.cut(id_)


@contextlib.contextmanager
def _lock(forget_dir: str):
  """Requests on one workdir run one after another: a second one waits for the first."""
  fd = os.open(os.path.join(forget_dir, '.lock'), os.O_CREAT | os.O_RDWR, 0o666)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    print(f'another forget request is running on {os.path.dirname(forget_dir)}; waiting for it to finish', flush=True)
    fcntl.flock(fd, fcntl.LOCK_EX)
  try:
    yield
  finally:
    os.close(fd)  # releases the lock (a killed process releases it too)


# ------------------------------------------------------------------ versions
def request_paths(workdir: str, version: int, base_dir: str, method: str) -> Paths:
  """Request N's folders: it starts from `base_dir` (the model served before it), its phases (the
  augmented model, the method's own) sit under phases/forget_v<N>/ with their models inside,
  and the method's result is published as models/forget_v<N>."""
  return Paths(workdir=workdir, phases=os.path.join(workdir, 'phases', f'forget_v{version}'), start=base_dir,
               train_start=False, models=None,
               published=((method, os.path.join(workdir, 'models', f'forget_v{version}')),))


def base_for(workdir: str, version: int) -> str:
  """The model request `version` starts from (a full HF folder): the original, or the last version's
  model merged (requests that only removed records trained no model: the one before them)."""
  audits = audit_lib.read_audits(os.path.join(workdir, FORGET_DIR))
  prev_version = next((v for v in range(version - 1, 0, -1)
                       if not (v in audits and audits[v].get('model') is None)), None)
  if prev_version is None:
    return os.path.join(workdir, 'models', 'original')
  prev = os.path.join(workdir, 'models', f'forget_v{prev_version}')
  if not os.path.isdir(prev):
    raise UserError(f'{prev} is missing: the versions of {workdir} are broken; restore it (forget versions build '
                    'on each other)')
  return artifacts.full_weights_dir(prev)


def _audit_metrics(ctx, method: str, forget_rows: np.ndarray, user_ids) -> dict:
  """The new version against the model it started from: on the forget set, and MIA vs unseen users."""
  _, base = artifacts.load_full(ctx.paths.start)
  before = SingleModel(ctx, ctx.base_dtype(base), ctx.zero_adapters(base))
  after = single_from_dir(ctx, ctx.model_dir(method))
  test = ctx.data.splits['test']
  nonmember = np.flatnonzero(~np.isin(test.user_id, np.asarray(list(user_ids), np.int64)))
  f_before = score(ctx, before, 'train', forget_rows, keep_logits=True, desc='before/forget')
  f_after = score(ctx, after, 'train', forget_rows, keep_logits=True, desc='after/forget')
  n_before = score(ctx, before, 'test', nonmember, desc='before/nonmember')
  n_after = score(ctx, after, 'test', nonmember, desc='after/nonmember')
  d = metrics.distances_from_logits(f_after['first_logits'], f_before['first_logits'],
                                    yes_id=ctx.data.yes_id, no_id=ctx.data.no_id)
  labels = ctx.data.splits['train'].label[forget_rows]
  out = {'forget_jsd_to_pre_unlearning': d['jsd'], 'forget_jsd_yesno_to_pre_unlearning': d['jsd_yesno'],
         'forget_l2_to_pre_unlearning': d['l2'],
         'mia_auc': metrics.mia_auc(f_after['loss'], n_after['loss']),
         'mia_auc_before': metrics.mia_auc(f_before['loss'], n_before['loss']),
         'forget_auc': metrics.auc(labels, f_after['p_yes']), 'forget_auc_before': metrics.auc(labels, f_before['p_yes']),
         'nonmember_samples': int(len(nonmember))}
  return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


# ------------------------------------------------------------------ the request
def require_local(workdir: str) -> None:
  """A one-line UserError for a workdir on an object store (forget needs flock and local files)."""
  storage.require_local(workdir, 'forget', 'its request lock (flock) and the scrubbing of its data files need a '
                        'local file system')


def serve(config, workdir: str, *, users: str | None = None, interactions: str | None = None,
          categories: str | None = None, key_file: str | None = None, callbacks=()) -> dict:
  """Runs one forget request to the end (or finishes an interrupted one); returns its audit ({} if nothing to do)."""
  require_local(workdir)
  workdir = os.path.abspath(workdir)
  request = read_request(users, interactions, categories)
  method = config.unlearn.method
  if method not in spec.chainable():  # shard methods retrain shards: `unlearn` serves them
    raise UserError(f'forget runs config.unlearn.method={method!r}, which it cannot chain into versions; '
                    f'use one of {", ".join(spec.chainable())} (--config.unlearn.method=e2urec)')
  if artifacts.read_done(os.path.join(workdir, 'phases', 'original')) is None or \
      not os.path.isdir(os.path.join(workdir, 'models', 'original')):
    raise UserError(f'no trained model in {workdir}/models/original; run `train` (or `run`) on this workdir first')
  forget_dir = os.path.join(workdir, FORGET_DIR)
  audit_lib.check_legacy_salt(forget_dir)
  # A new key only for a workdir that served (or began) no request yet: a missing key file on one that
  # did is named as missing, not as "another key" (a fresh random one would be).
  served = bool(audit_lib.read_audits(forget_dir)) or os.path.exists(os.path.join(forget_dir, PENDING_FILE))
  key, save_key = audit_lib.open_key(key_file, workdir, create=not served, command='forget')
  runtime.ensure_writable_dir(forget_dir)
  with _lock(forget_dir):
    audits = audit_lib.read_audits(forget_dir)
    gaps = audit_lib.unaudited(workdir, audits, unfinished_ok=True)
    if gaps:  # a new version would be numbered, and built, over a request whose audit is lost
      raise UserError(f'forget serves no request over an incomplete audit trail: {gaps[0]}'
                      + (f' (and {len(gaps) - 1} more: run `audit`)' if len(gaps) > 1 else ''))
    audit_lib.check_key(audits, key, key_file)
    request_hash = audit_lib.keyed(key, *request.given())  # the request as given (a category: unresolved)
    pending_path = os.path.join(forget_dir, PENDING_FILE)
    pending = runtime.read_json(pending_path) if os.path.exists(pending_path) else None
    if pending is not None and pending['request_hash'] != request_hash:
      raise UserError(f'forget request v{pending["version"]} on {workdir} is unfinished; rerun it (the same '
                      '--users/--interactions/--categories and key) to finish it before starting another')
    if request.kind == 'category':  # its pairs, as the data holds them now (none left once scrubbed)
      request = forget_category.with_category_pairs(request, scrub.read_frames(workdir), key, audits, workdir,
                                                    missing_ok=pending is not None)
    if pending is None:
      pending = _plan(workdir, request, method, key, request_hash, audits)
      if pending is None:
        return {}
      save_key()  # a new key is written once its first request is accepted
      runtime.write_json(pending_path, pending)  # from here on, a rerun finishes this request
    if pending['stage'] == 'train':
      _train(config, workdir, request, key, audits, pending, callbacks)
      runtime.write_json(pending_path, pending)
    if pending['stage'] == 'scrub':
      found = _resolve(request, scrub.read_frames(workdir), key, audits, workdir, missing_ok=True)
      removed = scrub.scrub_data(workdir, found.scrub_users(), found.scrub_pairs())
      pending['removed'] = removed or pending.get('removed', {})
      if removed:  # a crash from here on reruns into a scrubbed workdir, whose counts are these
        runtime.write_json(pending_path, pending)
      deleted = scrub.delete(workdir, pending['delete'] + scrub.resume_checkpoints(workdir))
      pending['deleted'] = sorted(set(pending.get('deleted', []) + deleted))
      pending['stage'] = 'audit'
      runtime.write_json(pending_path, pending)
    runtime.refuse_staging(workdir, 'forget')  # the command's lock removed those of earlier commands
    audit = audit_lib.build_audit(pending, request, key)
    runtime.write_json(os.path.join(forget_dir, f'audit_v{pending["version"]}.json'), audit)
    os.remove(pending_path)
  return audit


def _forget_mask(request, frames, key, audits, workdir, *, quiet=False):
  found = _resolve(request, frames, key, audits, workdir)
  for what, v in ([] if quiet else found.done):
    print(f'{"user" if request.kind == "users" else "interaction"} {what} was already forgotten (request v{v}); '
          'skipped')
  # Every train sample the scrub will remove is in the forget set: a record a model learnt is never
  # scrubbed without being unlearned (raw-only records hold no train sample, so add none).
  mask = scrub.row_masks({'train': frames['train']}, found.scrub_users(), found.scrub_pairs())['train']
  return found, mask


def _plan(workdir, request, method, key, request_hash, audits):
  """The pending record of a new request (None: every record was forgotten before)."""
  frames = scrub.read_frames(workdir)
  found, mask = _forget_mask(request, frames, key, audits, workdir)
  if not found.any:
    print('nothing left to forget: every record of this request was forgotten by an earlier request')
    return None
  for split, m in scrub.row_masks(frames, found.scrub_users(), found.scrub_pairs()).items():
    if m.all():
      raise UserError(f'forgetting these records would leave the {split} split empty; '
                      'the workdir cannot serve this request (prepare a larger data set)')
  version = 1 + max(audits, default=0)
  # A category request's pairs are found in the data, which the scrub empties of them: their keyed
  # hashes are kept for the audit (forget_audit.build_audit).
  pair_hashes = {'pair_hashes': sorted(audit_lib.keyed(key, u, i) for u, i in request.pairs)} \
      if request.kind == 'category' else {}
  if not mask.any():  # no train sample holds them: the models never trained on them; remove the records only
    print(f'forget v{version}: no train sample holds these records (only validation/test samples or raw ratings '
          'that formed no sample), so no model learnt them; removing them from the workdir only')
    return {'version': version, 'request_hash': request_hash, 'stage': 'scrub', 'method': None,
            'started_utc': audit_lib.now_utc(), 'delete': [], 'base': None, 'stats': None, 'metrics': None,
            'forget_set': {'samples': 0, 'users': len(set(found.scrub_users()) | {u for u, _ in found.scrub_pairs()})},
            'unlearn_config': None, 'models': _models(workdir), **pair_hashes}
  in_experiment = bool((frames['train']['is_forget'].to_numpy() & mask).any())
  return {'version': version, 'request_hash': request_hash, 'stage': 'train', 'method': method,
          'started_utc': audit_lib.now_utc(), 'delete': helper_deletions(method, version, in_experiment),
          **pair_hashes}


def helper_deletions(method: str, version: int, in_experiment_forget_set: bool) -> list[str]:
  """What request `version` served by `method` deletes of the helper models (MethodSpec.helpers):
  the request's own (phases/forget_v<N>/<helper>, trained on its forget set or on the model
  before it), and, when the request's records were in the experiment's forget set, the
  experiment's helpers of every registered method that were trained on that set (E2URec's
  augmented model: it learnt those records "too well")."""
  out = [f'phases/forget_v{version}/{h.name}' for h in spec.get(method).helpers]
  if in_experiment_forget_set:
    for helper in spec.helpers():
      if helper.trained_on_forget:
        out += [f'models/{helper.name}', f'phases/{helper.name}']
  return out


def _models(workdir: str) -> list:
  return sorted(n for n in os.listdir(os.path.join(workdir, 'models')) if not n.startswith('.'))


def _train(config, workdir, request, key, audits, pending, callbacks=()) -> None:
  """Stage 1: the unlearning run on this request's forget set, and its scores (into `pending`)."""
  found, mask = _forget_mask(request, scrub.read_frames(workdir), key, audits, workdir, quiet=True)
  version, method = pending['version'], pending['method']
  base_dir = base_for(workdir, version)
  data = context.prepared_data(config, run_paths(workdir))
  train = dataclasses.replace(data.splits['train'], is_forget=mask)  # this request's forget set
  data = dataclasses.replace(data, splits=dict(data.splits, train=train))
  ctx = context.open_run(config, request_paths(workdir, version, base_dir, method), data=data)
  helpers = spec.get(method).helpers
  for helper in helpers:  # a resumed request, other settings
    artifacts.check_adapter_dir(ctx.model_dir(helper.name), ctx.bundle.lora_meta)
  artifacts.check_adapter_dir(ctx.model_dir(method), ctx.bundle.lora_meta)
  pending['base'] = os.path.relpath(base_dir, workdir)
  stats = runner.run_method(ctx, method, callbacks=callbacks)
  user_ids = found.scrub_users() or sorted({u for u, _ in found.scrub_pairs()})
  cost = (('time_s', 'compile_s', 'steps', 'trainable_params', 'unlearn_time_s')
          + tuple(f'{h.cost_key}_time_s' for h in helpers) + (f'{runner.FROZEN_WORK}_time_s',))
  pending.update(stage='scrub', stats={k: stats.get(k) for k in cost},
                 metrics=_audit_metrics(ctx, method, np.flatnonzero(mask), user_ids),
                 forget_set={'samples': int(mask.sum()), 'users': len(user_ids)},
                 unlearn_config=ctx.config.unlearn[method].to_dict(), models=_models(workdir))


def report(audit: dict, workdir: str) -> None:
  """The two lines `forget` prints about a finished request."""
  where = f'{workdir}/{FORGET_DIR}/audit_v{audit["version"]}.json'
  if audit['model'] is None:
    removed = sum(v for v in audit['removed_rows'].values() if isinstance(v, int))
    print(f"forget v{audit['version']}: removed {removed} record(s) that no train sample held; no model changed; "
          f"audit {where}")
    return
  m = {k: 'n/a' if v is None else f'{v:.4g}' for k, v in audit['metrics'].items()}
  print(f"forget v{audit['version']}: {audit['method']} on {audit['forget_set']['samples']} samples of "
        f"{audit['forget_set']['users']} user(s); served model {audit['model']} (base {audit['base']})")
  print(f"forget-set JSD to the pre-unlearning model {m['forget_jsd_to_pre_unlearning']}; membership-inference "
        f"AUC {m['mia_auc']} (before {m['mia_auc_before']}); audit {where}")
