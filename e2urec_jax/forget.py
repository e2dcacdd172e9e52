"""`forget`: serve a forget request on a trained run.

  python -m e2urec_jax forget --users=196,305 --workdir=DIR      (or --users=FILE, one id a line)
  python -m e2urec_jax forget --interactions=pairs.csv --workdir=DIR   (user_id,item_id lines)

Ids are spelled as in the source data (its user/item columns). A request:
1. builds its forget set: the train samples of those users (or the samples that hold those
   interactions, as target or in the shown history); the retain set is every other train sample;
2. runs config.unlearn.method on it, starting from the model served now: models/original
   for the first request, models/forget_v<N-1> (merged) after that. For E2URec it trains a
   fresh augmented model on this forget set first;
3. writes models/forget_v<N> (adapters naming their base, or full weights);
4. scores it against the model it started from (forget-set JSD, membership-inference AUC);
5. removes the records from every data file, raw copy and cache in the workdir, deletes the
   models trained on them that only served unlearning (the augmented models and their phases)
   and every resume checkpoint;
6. writes forget/audit_v<N>.json: salted sha256 of the ids (the salt is forget/salt.key, never
   in an audit), UTC time, method, the scores, what was removed, and what remains.
Each stage is recorded in forget/pending.json (hashes only), so rerunning the same command
after a crash finishes the request; a different request waits until it is done.
"""
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import os
import secrets

import numpy as np

from e2urec_jax import forget_scrub as scrub
from e2urec_jax import runtime
from e2urec_jax.errors import UserError
from e2urec_jax.train import artifacts
from e2urec_jax.train.paths import Paths, run_paths

FORGET_DIR = 'forget'
SALT_FILE = 'salt.key'
PENDING_FILE = 'pending.json'
REMAINS = ('The frozen original model (models/original) was trained on these records and still encodes them; '
           'forget_v{n} is built on top of it and makes the served model answer as if they were unseen, '
           'approximately: their influence is reduced, not provably removed. Only retraining from scratch '
           'without them is exact.')


@dataclasses.dataclass
class Request:
  kind: str  # 'users' | 'interactions'
  users: list  # user ids as the source spells them (sorted, unique)
  pairs: list  # (user id, item id) as the source spells them; interactions only


# ------------------------------------------------------------------ request
def parse_users(spec: str) -> list:
  spec = spec.strip()
  if os.path.isfile(spec):
    text = open(spec, encoding='utf-8').read()
    source = f'--users file {spec}'
  elif os.sep in spec or spec.endswith(('.txt', '.csv')):
    raise UserError(f'--users={spec!r}: no such file; pass a file of user ids (one a line) or ids (--users=196,305)')
  else:
    text, source = spec, '--users'
  ids = [t.strip() for line in text.splitlines() if not line.lstrip().startswith('#')
         for t in line.split(',') if t.strip()]
  if not ids:
    raise UserError(f'{source} lists no user ids: the forget set would be empty; pass ids (--users=196,305) '
                    'or a file with one id a line')
  return sorted(set(ids))


def parse_interactions(path: str) -> list:
  if not os.path.isfile(path):
    raise UserError(f'--interactions={path!r}: no such file; pass a CSV of user_id,item_id lines')
  pairs = []
  for n, line in enumerate(open(path, encoding='utf-8').read().splitlines(), start=1):
    if not line.strip() or line.lstrip().startswith('#'):
      continue
    fields = [f.strip() for f in line.replace('\t', ',').split(',')]
    if n == 1 and 'user' in fields[0].lower():
      continue  # header
    if len(fields) != 2 or not all(fields):
      raise UserError(f'{path} line {n}: expected user_id,item_id, found {line[:60]!r}; fix or remove that line')
    pairs.append((fields[0], fields[1]))
  if not pairs:
    raise UserError(f'{path} lists no interactions: the forget set would be empty; add user_id,item_id lines')
  return sorted(set(pairs))


def read_request(users: str | None, interactions: str | None) -> Request:
  if users is not None and interactions is not None:
    raise UserError('pass either --users or --interactions, not both (one request at a time)')
  if interactions is not None:
    pairs = parse_interactions(interactions)
    return Request('interactions', sorted({u for u, _ in pairs}), pairs)
  if users is None:
    raise UserError('forget needs --users=IDS_OR_FILE (whole users) or --interactions=FILE (user_id,item_id pairs)')
  return Request('users', parse_users(users), [])


def _salted(salt: str, *parts) -> str:
  return hashlib.sha256((salt + '\x00' + '\x00'.join(str(p) for p in parts)).encode()).hexdigest()


def _salt(forget_dir: str) -> str:
  path = os.path.join(forget_dir, SALT_FILE)
  if not os.path.exists(path):
    fd = os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
      f.write(secrets.token_hex(32))
    os.replace(path + '.tmp', path)
  return open(path).read().strip()


@contextlib.contextmanager
def _lock(forget_dir: str):
  """Requests on one workdir run one after another: a second one waits for the first."""
  fd = os.open(os.path.join(forget_dir, '.lock'), os.O_CREAT | os.O_RDWR, 0o600)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    print(f'another forget request is running on {os.path.dirname(forget_dir)}; waiting for it to finish', flush=True)
    fcntl.flock(fd, fcntl.LOCK_EX)
  try:
    yield
  finally:
    os.close(fd)  # releases the lock (a killed process releases it too)


def _audits(forget_dir: str) -> dict:
  out = {}
  for name in os.listdir(forget_dir):
    if name.startswith('audit_v') and name.endswith('.json'):
      out[int(name[len('audit_v'):-len('.json')])] = runtime.read_json(os.path.join(forget_dir, name))
  return out


def _resolve(request: Request, frames: dict, salt: str, audits: dict, *, missing_ok: bool = False) -> tuple:
  """(user ints, pair ints, [(id, version)] already forgotten) for the ids in the data.

  An id neither in the data nor in an earlier audit is a UserError (unless missing_ok:
  a resumed request whose records are already scrubbed)."""
  users, items = {}, {}
  for f in frames.values():
    users.update(zip(f['user_key'].astype(str), f['user'].astype(np.int64)))
    items.update(zip(f['item_key'].astype(str), f['item'].astype(np.int64)))
  if items and all(k == str(v) for k, v in items.items()):  # integer ids: an item only seen in histories counts too
    items = _IntKeys(items)
  earlier_users = {h: v for v, a in audits.items() if a['request'] == 'users' for h in a['subjects']['sha256']}
  earlier_pairs = {h: v for v, a in audits.items() for h in a['subjects'].get('pairs_sha256', [])}
  found, done = [], []
  if request.kind == 'users':
    for key in request.users:
      if key in users:
        found.append(int(users[key]))
      elif _salted(salt, key) in earlier_users:
        done.append((key, earlier_users[_salted(salt, key)]))
      elif not missing_ok:
        raise UserError(f'user {key!r} is not in the data of this workdir (no train/valid/test samples); '
                        "check the id: ids are spelled as in the source's user column")
    return found, [], done
  for ukey, ikey in request.pairs:
    h = _salted(salt, ukey, ikey)
    if ukey in users and ikey in items:
      pair = (int(users[ukey]), int(items[ikey]))
      if any(m.any() for m in scrub.row_masks(frames, [], [pair]).values()):
        found.append(pair)
        continue
    if h in earlier_pairs or _salted(salt, ukey) in earlier_users:
      done.append((f'{ukey},{ikey}', earlier_pairs.get(h) or earlier_users[_salted(salt, ukey)]))
    elif not missing_ok:
      raise UserError(f'interaction ({ukey!r}, {ikey!r}) is not in the data of this workdir (no sample shows it); '
                      'check the user and item ids (spelled as in the source data)')
  return [], found, done


class _IntKeys(dict):
  """key -> id where the source's ids are the integers themselves (MovieLens, synthetic)."""

  def __contains__(self, key):
    return super().__contains__(key) or str(key).isdigit()

  def __getitem__(self, key):
    return super().__getitem__(key) if super().__contains__(key) else int(key)


# ------------------------------------------------------------------ versions
def request_paths(workdir: str, version: int, base_dir: str, method: str) -> Paths:
  """Request N's folders: it starts from `base_dir` (the model served before it), its phases (the
  augmented model, the method's own) sit under phases/forget_v<N>/ with their models inside,
  and the method's result is published as models/forget_v<N>."""
  return Paths(workdir=workdir, phases=os.path.join(workdir, 'phases', f'forget_v{version}'), start=base_dir,
               train_start=False, models=None,
               published=((method, os.path.join(workdir, 'models', f'forget_v{version}')),))


def base_for(workdir: str, version: int) -> str:
  """The model request `version` starts from (a full HF folder): the original, or the last version merged."""
  if version == 1:
    return os.path.join(workdir, 'models', 'original')
  prev = os.path.join(workdir, 'models', f'forget_v{version - 1}')
  if not os.path.isdir(prev):
    raise UserError(f'{prev} is missing: the versions of {workdir} are broken; restore it (forget versions build '
                    'on each other)')
  return artifacts.full_weights_dir(prev)


def _audit_metrics(ctx, method: str, forget_rows: np.ndarray, user_ids) -> dict:
  """The new version against the model it started from: on the forget set, and MIA vs unseen users."""
  from e2urec_jax.eval import metrics
  from e2urec_jax.eval.evaluate import score
  from e2urec_jax.train.inference import SingleModel, single_from_dir
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
def serve(config, workdir: str, *, users: str | None = None, interactions: str | None = None,
          callbacks=()) -> dict:
  """Runs one forget request to the end (or finishes an interrupted one); returns its audit ({} if nothing to do)."""
  from e2urec_jax import storage
  from e2urec_jax.methods import spec
  storage.require_local(workdir, 'forget', 'its request lock (flock) and its secret salt (an owner-only file) '
                        'need a local file system')
  workdir = os.path.abspath(workdir)
  request = read_request(users, interactions)
  method = config.unlearn.method
  if method not in spec.chainable():  # shard methods retrain shards: `unlearn` serves them
    raise UserError(f'forget runs config.unlearn.method={method!r}, which it cannot chain into versions; '
                    f'use one of {", ".join(spec.chainable())} (--config.unlearn.method=e2urec)')
  if artifacts.read_done(os.path.join(workdir, 'phases', 'original')) is None or \
      not os.path.isdir(os.path.join(workdir, 'models', 'original')):
    raise UserError(f'no trained model in {workdir}/models/original; run `train` (or `run`) on this workdir first')
  forget_dir = runtime.ensure_writable_dir(os.path.join(workdir, FORGET_DIR))
  with _lock(forget_dir):
    salt = _salt(forget_dir)
    request_hash = _salted(salt, request.kind, *request.users, *[f'{u},{i}' for u, i in request.pairs])
    pending_path = os.path.join(forget_dir, PENDING_FILE)
    pending = runtime.read_json(pending_path) if os.path.exists(pending_path) else None
    if pending is not None and pending['request_hash'] != request_hash:
      raise UserError(f'forget request v{pending["version"]} on {workdir} is unfinished; rerun it (the same '
                      '--users/--interactions) to finish it before starting another')
    audits = _audits(forget_dir)
    if pending is None:
      pending = _plan(workdir, request, method, salt, request_hash, audits)
      if pending is None:
        return {}
      runtime.write_json(pending_path, pending)  # from here on, a rerun finishes this request
    if pending['stage'] == 'train':
      _train(config, workdir, request, salt, audits, pending, callbacks)
      runtime.write_json(pending_path, pending)
    if pending['stage'] == 'scrub':
      found_users, found_pairs, _ = _resolve(request, scrub.read_frames(workdir), salt, audits, missing_ok=True)
      removed = scrub.scrub_data(workdir, found_users, found_pairs)
      pending['removed'] = removed or pending.get('removed', {})
      deleted = scrub.delete(workdir, pending['delete'] + scrub.resume_checkpoints(workdir))
      pending['deleted'] = sorted(set(pending.get('deleted', []) + deleted))
      pending['stage'] = 'audit'
      runtime.write_json(pending_path, pending)
    audit = _audit(pending, request, salt)
    runtime.write_json(os.path.join(forget_dir, f'audit_v{pending["version"]}.json'), audit)
    os.remove(pending_path)
  return audit


def _forget_mask(request, frames, salt, audits, *, quiet=False):
  found_users, found_pairs, done = _resolve(request, frames, salt, audits)
  for what, v in ([] if quiet else done):
    print(f'{request.kind[:-1]} {what} was already forgotten (request v{v}); skipped')
  mask = scrub.row_masks({'train': frames['train']}, found_users, found_pairs)['train']
  return found_users, found_pairs, mask


def _plan(workdir, request, method, salt, request_hash, audits):
  """The pending record of a new request (None: every record was forgotten before)."""
  frames = scrub.read_frames(workdir)
  found_users, found_pairs, mask = _forget_mask(request, frames, salt, audits)
  if not found_users and not found_pairs:
    print('nothing left to forget: every record of this request was forgotten by an earlier request')
    return None
  if not mask.any():
    what = 'these users have' if request.kind == 'users' else 'these interactions are in'
    raise UserError(f'the forget set is empty: {what} no train samples (only valid/test ones), so the model never '
                    'trained on them; nothing to unlearn (forget requests remove what the model was trained on)')
  version = 1 + max(audits, default=0)
  trained_aug = bool((frames['train']['is_forget'].to_numpy() & mask).any())  # the experiment's theta_a saw them
  return {'version': version, 'request_hash': request_hash, 'stage': 'train', 'method': method,
          'started_utc': _now(), 'delete': [f'phases/forget_v{version}/augmented']
                                            + (['models/augmented', 'phases/augmented'] if trained_aug else [])}


def _train(config, workdir, request, salt, audits, pending, callbacks=()) -> None:
  """Stage 1: the unlearning run on this request's forget set, and its scores (into `pending`)."""
  from e2urec_jax.methods import runner
  from e2urec_jax.train import context
  found_users, found_pairs, mask = _forget_mask(request, scrub.read_frames(workdir), salt, audits, quiet=True)
  version, method = pending['version'], pending['method']
  base_dir = base_for(workdir, version)
  data = context.prepared_data(config, run_paths(workdir))
  train = dataclasses.replace(data.splits['train'], is_forget=mask)  # this request's forget set
  data = dataclasses.replace(data, splits=dict(data.splits, train=train))
  ctx = context.open_run(config, request_paths(workdir, version, base_dir, method), data=data)
  artifacts.check_adapter_dir(ctx.model_dir('augmented'), ctx.bundle.lora_meta)  # a resumed request, other settings
  artifacts.check_adapter_dir(ctx.model_dir(method), ctx.bundle.lora_meta)
  pending['base'] = os.path.relpath(base_dir, workdir)
  stats = runner.run_method(ctx, method, callbacks=callbacks)
  user_ids = found_users or sorted({u for u, _ in found_pairs})
  pending.update(stage='scrub', stats={k: stats.get(k) for k in ('time_s', 'compile_s', 'steps', 'trainable_params',
                                                                   'unlearn_time_s', 'augment_time_s')},
                 metrics=_audit_metrics(ctx, method, np.flatnonzero(mask), user_ids),
                 forget_set={'samples': int(mask.sum()), 'users': len(user_ids)},
                 unlearn_config=ctx.config.unlearn[method].to_dict(),
                 models=sorted(n for n in os.listdir(os.path.join(workdir, 'models')) if not n.startswith('.')))


def _audit(pending: dict, request: Request, salt: str) -> dict:
  n = pending['version']
  trained_with = [m for m in pending['models'] if m not in ('augmented', f'forget_v{n}')]
  return {
      'version': n,
      'time_utc': _now(), 'started_utc': pending['started_utc'],
      'request': request.kind,
      'subjects': {'sha256': sorted(_salted(salt, u) for u in request.users),
                   'pairs_sha256': sorted(_salted(salt, u, i) for u, i in request.pairs),
                   'hash': f'sha256(salt + NUL + id) (pairs: user NUL item); the salt is {FORGET_DIR}/{SALT_FILE}, '
                           'kept apart from the audits'},
      'method': pending['method'], 'unlearn_config': pending['unlearn_config'],
      'model': f'models/forget_v{n}', 'base': pending['base'],
      'forget_set': pending['forget_set'], 'cost': pending['stats'],
      'metrics': pending['metrics'],
      'removed_rows': pending['removed'], 'deleted': pending['deleted'],
      'remains': {
          'statement': REMAINS.format(n=n),
          'models_that_may_encode_these_records': [f'models/{m}' for m in trained_with],
          'outside_the_workdir': 'raw source files outside the workdir (config.data.raw_dir, the download cache) '
                                 'are not modified; preparing the data again from them brings these records back',
          'aggregates': 'logged losses, results.json and the trained tokenizer were computed with these records; '
                        'they hold no per-user rows'}}


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def report(audit: dict, workdir: str) -> None:
  """The two lines `forget` prints about a finished request."""
  m = {k: 'n/a' if v is None else f'{v:.4g}' for k, v in audit['metrics'].items()}
  print(f"forget v{audit['version']}: {audit['method']} on {audit['forget_set']['samples']} samples of "
        f"{audit['forget_set']['users']} user(s); served model {audit['model']} (base {audit['base']})")
  print(f"forget-set JSD to the pre-unlearning model {m['forget_jsd_to_pre_unlearning']}; membership-inference "
        f"AUC {m['mia_auc']} (before {m['mia_auc_before']}); audit {workdir}/{FORGET_DIR}/audit_v{audit['version']}.json")
