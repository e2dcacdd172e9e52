"""`forget`: serve a forget request on a trained run.

  python -m e2urec_jax forget --users=196,305 --forget_key=KEY --workdir=DIR   (or --users=FILE, one id a line)
  python -m e2urec_jax forget --interactions=pairs.csv --forget_key=KEY --workdir=DIR   (user_id,item_id lines)

Ids are spelled as in the source data (its user/item columns). KEY is the operator's secret
key file, outside the workdir (--forget_key, or the E2UREC_FORGET_KEY variable; created 0600
with 32 random bytes on first use): the workdir keeps only keyed hashes of forgotten ids
(HMAC-SHA256 under that key), so nobody holding the workdir alone can tell who was forgotten
(trying every possible id gets nowhere without the key), while whoever holds the key can
verify an audit (`audit` command) and the served model can refuse forgotten users (`predict`).

A request:
1. builds its forget set: the train samples of those users (or the samples that hold those
   interactions, as target or in the shown history); the retain set is every other train sample;
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
"""
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import hmac
import json
import os
import secrets

import numpy as np

from e2urec_jax import forget_scrub as scrub
from e2urec_jax import runtime, storage
from e2urec_jax.errors import UserError
from e2urec_jax.train import artifacts
from e2urec_jax.train.paths import Paths, run_paths

FORGET_DIR = 'forget'
LEGACY_SALT = 'salt.key'  # where requests before keyed hashes kept their salt (inside the workdir)
PENDING_FILE = 'pending.json'
SCHEME = 'hmac-sha256'
HASH_NOTE = ('HMAC-SHA256(key, id) (pairs: user NUL item) under the operator\'s key file (--forget_key), '
             'which is never in the workdir; key_id = HMAC-SHA256(key, "key-id")')
REMAINS = ('The frozen original model (models/original) was trained on these records and still encodes them; '
           'forget_v{n} is built on top of it and makes the served model answer as if they were unseen, '
           'approximately: their influence is reduced, not provably removed. Only retraining from scratch '
           'without them is exact.')


@dataclasses.dataclass
class Request:
  kind: str  # 'users' | 'interactions'
  users: list  # user ids as the source spells them (sorted, unique)
  pairs: list  # (user id, item id) as the source spells them; interactions only
  where: dict = dataclasses.field(default_factory=dict)  # id or (user, item) -> where it was given ('F line 3')


# ------------------------------------------------------------------ request
def parse_users(spec: str) -> list:
  """The user ids of --users (inline or a file), sorted and unique (data/idfiles.py)."""
  from e2urec_jax.data import idfiles
  return sorted({u for u, _ in idfiles.read_user_ids(spec)})


def parse_interactions(path: str) -> list:
  """The (user, item) pairs of --interactions, sorted and unique (data/idfiles.py)."""
  from e2urec_jax.data import idfiles
  return sorted({(u, i) for u, i, _ in idfiles.read_pairs(path, '--interactions')})


def read_request(users: str | None, interactions: str | None) -> Request:
  from e2urec_jax.data import idfiles
  if users is not None and interactions is not None:
    raise UserError('pass either --users or --interactions, not both (one request at a time)')
  if interactions is not None:
    rows = idfiles.read_pairs(interactions, '--interactions')
    pairs = sorted({(u, i) for u, i, _ in rows})
    where = {}
    for u, i, n in rows:
      where.setdefault((u, i), f'{interactions} line {n}')
    return Request('interactions', sorted({u for u, _ in pairs}), pairs, where)
  if users is None:
    raise UserError('forget needs --users=IDS_OR_FILE (whole users) or --interactions=FILE (user_id,item_id pairs)')
  given = idfiles.read_user_ids(users)
  where = {}
  for u, w in given:
    where.setdefault(u, w)
  return Request('users', sorted(where), [], where)


# ------------------------------------------------------------------ the key
def keyed(key: bytes, *parts) -> str:
  """HMAC-SHA256 of the id (or user NUL item) under the operator's key."""
  return hmac.new(key, '\x00'.join(str(p) for p in parts).encode(), hashlib.sha256).hexdigest()


def _legacy(key: bytes, *parts) -> str:
  """The salted sha256 of requests served before keyed hashes (their salt is the key)."""
  return hashlib.sha256((key.decode('latin-1') + '\x00' + '\x00'.join(str(p) for p in parts)).encode()).hexdigest()


def key_id(key: bytes) -> str:
  return keyed(key, 'key-id')[:16]


def read_key(key_file: str | None, workdir: str, *, create: bool, command: str) -> bytes:
  """The operator's key: the bytes of `key_file` (created, 0600, when `create` and missing)."""
  key, save = _key(key_file, workdir, create=create, command=command)
  save()
  return key


def _key(key_file: str | None, workdir: str, *, create: bool, command: str):
  """(key, save): the key of `key_file`, or, when `create` and the file is missing, a new random key that
  save() writes (0600). forget saves it only once a request is accepted, so a refused first request leaves
  no key behind."""
  if not key_file:
    raise UserError(f'{command} needs the forget key: pass --forget_key=FILE (or set E2UREC_FORGET_KEY), a file '
                    'outside the workdir that only the operator can read (created on the first forget request); '
                    'the workdir keeps only hashes of forgotten ids under it')
  key_file = os.path.abspath(os.path.expanduser(key_file))
  if storage.inside(key_file, workdir):
    raise UserError(f'--forget_key={key_file} is inside the workdir {workdir}: whoever has the workdir would have '
                    'the key and could recover the forgotten ids; keep the key file elsewhere')
  if not os.path.exists(key_file):
    if not create:
      raise UserError(f'--forget_key={key_file}: no such file; pass the key file the forget requests of this '
                      'workdir were served with')
    key = secrets.token_hex(32).encode()  # the file holds it as text, read back as these bytes
    return key, lambda: _write_key(key_file, key)
  with open(key_file, 'rb') as f:
    key = f.read().strip()
  if len(key) < 16:
    raise UserError(f'--forget_key={key_file}: {len(key)} bytes; a key needs at least 16 (a new file gets 32 '
                    'random bytes)')
  return key, lambda: None


def _write_key(key_file: str, key: bytes) -> None:
  os.makedirs(os.path.dirname(key_file), mode=0o700, exist_ok=True)
  fd = os.open(key_file + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a secret: owner only
  with os.fdopen(fd, 'w') as f:
    f.write(key.decode() + '\n')
  os.replace(key_file + '.tmp', key_file)
  print(f'created the forget key {key_file} (0600); keep it safe and out of the workdir: audits are verified '
        'and forgotten users refused with it')


def _check_legacy_salt(forget_dir: str) -> None:
  path = os.path.join(forget_dir, LEGACY_SALT)
  if storage.exists(path):
    raise UserError(f'{path}: audits written before keyed hashes keep their salt beside them, so the forgotten ids '
                    'can be recovered from the workdir; move that file out of the workdir and pass it as '
                    '--forget_key=FILE (its audits stay verifiable with it)')


def _subject_hashes(audit: dict) -> tuple[list, list]:
  s = audit.get('subjects', {})
  return s.get('users', s.get('sha256', [])), s.get('pairs', s.get('pairs_sha256', []))


def _hasher(audit: dict, key: bytes):
  legacy = audit.get('subjects', {}).get('scheme') != SCHEME
  return (lambda *parts: _legacy(key, *parts)) if legacy else (lambda *parts: keyed(key, *parts))


def _check_key(audits: dict, key: bytes, key_file: str) -> None:
  for v, audit in sorted(audits.items()):
    want = audit.get('subjects', {}).get('key_id')
    if want and want != key_id(key):
      raise UserError(f'--forget_key={key_file} is not the key audit v{v} was written with (key id {want}, this '
                      f'key {key_id(key)}); pass the key file the forget requests of this workdir were served with')


def mac(audit: dict, key: bytes) -> str:
  body = {k: v for k, v in audit.items() if k != 'mac'}
  return keyed(key, json.dumps(body, sort_keys=True, default=runtime._json_default))


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


def _audits(forget_dir: str) -> dict:
  out = {}
  if not storage.isdir(forget_dir):
    return out
  for name in storage.listdir(forget_dir):
    if name.startswith('audit_v') and name.endswith('.json'):
      out[int(name[len('audit_v'):-len('.json')])] = runtime.read_json(os.path.join(forget_dir, name))
  return out


def forgotten_by(audits: dict, key: bytes, user: str, item: str | None = None) -> int | None:
  """The version of the request that forgot `user` (a users request), or the pair (user, item)
  (an interactions request), checked through the audits' keyed hashes; None if none did."""
  for v, audit in sorted(audits.items()):
    h = _hasher(audit, key)
    users, pairs = _subject_hashes(audit)
    if audit.get('request') == 'users' and h(user) in users:
      return v
    if item is not None and h(user, item) in pairs:
      return v
  return None


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
  """Where the request's ids are. An id neither in the data, nor in the raw copy, nor in an earlier
  audit is a UserError naming where it was given (unless missing_ok: a resumed request whose
  records are already scrubbed)."""
  users, items = {}, {}
  for f in frames.values():
    users.update(zip(f['user_key'].astype(str), f['user'].astype(np.int64)))
    items.update(zip(f['item_key'].astype(str), f['item'].astype(np.int64)))
  if items and all(k == str(v) for k, v in items.items()):  # integer ids: an item only seen in histories counts too
    items = _IntKeys(items)
  raw_users, raw_pairs = scrub.raw_records(workdir)  # the source copy in the workdir (synthetic data)
  out = Found()
  if request.kind == 'users':
    for key_ in request.users:
      if key_ in users:
        out.users.append(int(users[key_]))
      elif key_.isdigit() and int(key_) in raw_users:
        out.raw_users.append(int(key_))
      elif forgotten_by(audits, key, key_) is not None:
        out.done.append((key_, forgotten_by(audits, key, key_)))
      elif not missing_ok:
        where = request.where.get(key_, '--users')
        where = '' if where == '--users' else f'{where}: '
        raise UserError(f"{where}user {key_!r} is not in the data of this workdir (no samples, no raw record); "
                        "check the id: ids are spelled as in the source's user column")
    return out
  for ukey, ikey in request.pairs:
    if ukey in users and ikey in items:
      pair = (int(users[ukey]), int(items[ikey]))
      if any(m.any() for m in scrub.row_masks(frames, [], [pair]).values()):
        out.pairs.append(pair)
        continue
    if ukey.isdigit() and ikey.isdigit() and (int(ukey), int(ikey)) in raw_pairs:
      out.raw_pairs.append((int(ukey), int(ikey)))  # a rating that formed no sample
      continue
    version = forgotten_by(audits, key, ukey, ikey)
    if version is not None:
      out.done.append((f'{ukey},{ikey}', version))
    elif not missing_ok:
      where = request.where.get((ukey, ikey))
      raise UserError(f'{where + ": " if where else ""}interaction ({ukey!r}, {ikey!r}) is not in the data of this '
                      'workdir (no sample shows it, no raw record holds it); check the user and item ids '
                      '(spelled as in the source data)')
  return out


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
  """The model request `version` starts from (a full HF folder): the original, or the last version's
  model merged (requests that only removed records trained no model: the one before them)."""
  audits = _audits(os.path.join(workdir, FORGET_DIR))
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
def require_local(workdir: str) -> None:
  """A one-line UserError for a workdir on an object store (forget needs flock and local files)."""
  storage.require_local(workdir, 'forget', 'its request lock (flock) and the scrubbing of its data files need a '
                        'local file system')


def serve(config, workdir: str, *, users: str | None = None, interactions: str | None = None,
          key_file: str | None = None, callbacks=()) -> dict:
  """Runs one forget request to the end (or finishes an interrupted one); returns its audit ({} if nothing to do)."""
  from e2urec_jax.methods import spec
  require_local(workdir)
  workdir = os.path.abspath(workdir)
  request = read_request(users, interactions)
  method = config.unlearn.method
  if method not in spec.chainable():  # shard methods retrain shards: `unlearn` serves them
    raise UserError(f'forget runs config.unlearn.method={method!r}, which it cannot chain into versions; '
                    f'use one of {", ".join(spec.chainable())} (--config.unlearn.method=e2urec)')
  if artifacts.read_done(os.path.join(workdir, 'phases', 'original')) is None or \
      not os.path.isdir(os.path.join(workdir, 'models', 'original')):
    raise UserError(f'no trained model in {workdir}/models/original; run `train` (or `run`) on this workdir first')
  _check_legacy_salt(os.path.join(workdir, FORGET_DIR))
  key, save_key = _key(key_file, workdir, create=True, command='forget')
  forget_dir = runtime.ensure_writable_dir(os.path.join(workdir, FORGET_DIR))
  with _lock(forget_dir):
    audits = _audits(forget_dir)
    _check_key(audits, key, key_file)
    request_hash = keyed(key, request.kind, *request.users, *[f'{u},{i}' for u, i in request.pairs])
    pending_path = os.path.join(forget_dir, PENDING_FILE)
    pending = runtime.read_json(pending_path) if os.path.exists(pending_path) else None
    if pending is not None and pending['request_hash'] != request_hash:
      raise UserError(f'forget request v{pending["version"]} on {workdir} is unfinished; rerun it (the same '
                      '--users/--interactions and key) to finish it before starting another')
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
      deleted = scrub.delete(workdir, pending['delete'] + scrub.resume_checkpoints(workdir))
      pending['deleted'] = sorted(set(pending.get('deleted', []) + deleted))
      pending['stage'] = 'audit'
      runtime.write_json(pending_path, pending)
    audit = _audit(pending, request, key)
    runtime.write_json(os.path.join(forget_dir, f'audit_v{pending["version"]}.json'), audit)
    os.remove(pending_path)
  return audit


def _forget_mask(request, frames, key, audits, workdir, *, quiet=False):
  found = _resolve(request, frames, key, audits, workdir)
  for what, v in ([] if quiet else found.done):
    print(f'{request.kind[:-1]} {what} was already forgotten (request v{v}); skipped')
  mask = scrub.row_masks({'train': frames['train']}, found.users, found.pairs)['train']
  return found, mask


def _plan(workdir, request, method, key, request_hash, audits):
  """The pending record of a new request (None: every record was forgotten before)."""
  frames = scrub.read_frames(workdir)
  found, mask = _forget_mask(request, frames, key, audits, workdir)
  if not found.any:
    print('nothing left to forget: every record of this request was forgotten by an earlier request')
    return None
  for split, m in scrub.row_masks(frames, found.users, found.pairs).items():
    if m.all():
      raise UserError(f'forgetting these records would leave the {split} split empty; '
                      'the workdir cannot serve this request (prepare a larger data set)')
  version = 1 + max(audits, default=0)
  if not mask.any():  # no train sample holds them: the models never trained on them; remove the records only
    print(f'forget v{version}: no train sample holds these records (only validation/test samples or raw ratings '
          'that formed no sample), so no model learnt them; removing them from the workdir only')
    return {'version': version, 'request_hash': request_hash, 'stage': 'scrub', 'method': None,
            'started_utc': _now(), 'delete': [], 'base': None, 'stats': None, 'metrics': None,
            'forget_set': {'samples': 0, 'users': len(set(found.scrub_users()) | {u for u, _ in found.scrub_pairs()})},
            'unlearn_config': None, 'models': _models(workdir)}
  in_experiment = bool((frames['train']['is_forget'].to_numpy() & mask).any())
  return {'version': version, 'request_hash': request_hash, 'stage': 'train', 'method': method,
          'started_utc': _now(), 'delete': helper_deletions(method, version, in_experiment)}


def helper_deletions(method: str, version: int, in_experiment_forget_set: bool) -> list[str]:
  """What request `version` served by `method` deletes of the helper models (MethodSpec.helpers):
  the request's own (phases/forget_v<N>/<helper>, trained on its forget set or on the model
  before it), and, when the request's records were in the experiment's forget set, the
  experiment's helpers of every registered method that were trained on that set (E2URec's
  augmented model: it learnt those records "too well")."""
  from e2urec_jax.methods import spec
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
  from e2urec_jax.methods import runner
  from e2urec_jax.train import context
  found, mask = _forget_mask(request, scrub.read_frames(workdir), key, audits, workdir, quiet=True)
  version, method = pending['version'], pending['method']
  base_dir = base_for(workdir, version)
  data = context.prepared_data(config, run_paths(workdir))
  train = dataclasses.replace(data.splits['train'], is_forget=mask)  # this request's forget set
  data = dataclasses.replace(data, splits=dict(data.splits, train=train))
  ctx = context.open_run(config, request_paths(workdir, version, base_dir, method), data=data)
  from e2urec_jax.methods import spec
  helpers = spec.get(method).helpers
  for helper in helpers:  # a resumed request, other settings
    artifacts.check_adapter_dir(ctx.model_dir(helper.name), ctx.bundle.lora_meta)
  artifacts.check_adapter_dir(ctx.model_dir(method), ctx.bundle.lora_meta)
  pending['base'] = os.path.relpath(base_dir, workdir)
  stats = runner.run_method(ctx, method, callbacks=callbacks)
  user_ids = found.users or sorted({u for u, _ in found.pairs})
  cost = (('time_s', 'compile_s', 'steps', 'trainable_params', 'unlearn_time_s')
          + tuple(f'{h.cost_key}_time_s' for h in helpers) + (f'{runner.FROZEN_WORK}_time_s',))
  pending.update(stage='scrub', stats={k: stats.get(k) for k in cost},
                 metrics=_audit_metrics(ctx, method, np.flatnonzero(mask), user_ids),
                 forget_set={'samples': int(mask.sum()), 'users': len(user_ids)},
                 unlearn_config=ctx.config.unlearn[method].to_dict(), models=_models(workdir))


SCRUB_ONLY = ('These records were in no train sample (as target or in a shown history): only validation/test '
              'samples or raw ratings that formed no sample held them, so no model was trained on them and none '
              'was changed; they were removed from the workdir\'s data.')


def _deleted_helpers() -> set:
  """Helper models (MethodSpec.helpers) a request deletes where they learnt its records: not listed
  among the models trained with them (those a helper only reads, the retrained model, are)."""
  from e2urec_jax.methods import spec
  return {h.name for h in spec.helpers() if h.trained_on_forget}


def _audit(pending: dict, request: Request, key: bytes) -> dict:
  n = pending['version']
  scrub_only = pending['method'] is None
  trained_with = [m for m in pending['models'] if m not in _deleted_helpers() and m != f'forget_v{n}']
  audit = {
      'version': n,
      'time_utc': _now(), 'started_utc': pending['started_utc'],
      'request': request.kind,
      'subjects': {'scheme': SCHEME, 'key_id': key_id(key),
                   'users': sorted(keyed(key, u) for u in request.users),
                   'pairs': sorted(keyed(key, u, i) for u, i in request.pairs),
                   'hash': HASH_NOTE},
      'method': pending['method'], 'unlearn_config': pending['unlearn_config'],
      'model': None if scrub_only else f'models/forget_v{n}', 'base': pending['base'],
      'forget_set': pending['forget_set'], 'cost': pending['stats'],
      'metrics': pending['metrics'],
      'removed_rows': pending['removed'], 'deleted': pending['deleted'],
      'remains': {
          'statement': SCRUB_ONLY if scrub_only else REMAINS.format(n=n),
          'models_that_may_encode_these_records': [] if scrub_only else [f'models/{m}' for m in trained_with],
          'outside_the_workdir': 'raw source files outside the workdir (config.data.raw_dir, the download cache) '
                                 'are not modified; preparing the data again from them brings these records back',
          'aggregates': 'logged losses, results.json and the trained tokenizer were computed with these records; '
                        'they hold no per-user rows'}}
  audit['mac'] = mac(audit, key)
  return audit


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


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


# ------------------------------------------------------------------ what the key opens
def refuse_forgotten(workdir: str, pairs, *, key_file: str | None, allow: bool) -> None:
  """For `predict`: a UserError naming the first pair whose user (or interaction) a forget request
  forgot, unless `allow`. The audits hold keyed hashes only, so the check needs the key."""
  forget_dir = os.path.join(storage.abspath(workdir), FORGET_DIR)
  audits = _audits(forget_dir)
  if not audits or allow:
    return
  if not key_file:
    raise UserError(f'{workdir} served {len(audits)} forget request(s); predict refuses their users and checks each '
                    'one through the audits\' keyed hashes, which needs the key: pass --forget_key=FILE (or set '
                    'E2UREC_FORGET_KEY), or --allow_forgotten to score forgotten users anyway')
  _check_legacy_salt(forget_dir)
  key = read_key(key_file, storage.abspath(workdir), create=False, command='predict')
  _check_key(audits, key, key_file)
  lines = pairs['line'] if 'line' in pairs else [None] * len(pairs)
  for user, item, line in zip(pairs['user_id'], pairs['item_id'], lines):
    v = forgotten_by(audits, key, str(user), str(item))
    if v is not None:
      where = f'line {line}: ' if line is not None else ''
      what = f'user {user!r}' if audits[v].get('request') == 'users' else f'interaction ({user!r}, {item!r})'
      raise UserError(f'{where}{what} was forgotten by forget request v{v}; the served model does not score '
                      'forgotten users (pass --allow_forgotten to score anyway)')


def verify_audits(workdir: str, *, key_file: str | None, users: str | None = None,
                  interactions: str | None = None) -> list[str]:
  """The `audit` command: each audit's MAC under the key, and which request forgot the given ids."""
  forget_dir = os.path.join(storage.abspath(workdir), FORGET_DIR)
  audits = _audits(forget_dir)
  if not audits:
    raise UserError(f'{workdir} has no forget audits ({forget_dir}/audit_v*.json)')
  key = read_key(key_file, storage.abspath(workdir), create=False, command='audit')
  lines, bad = [], 0
  for v, audit in sorted(audits.items()):
    if 'mac' not in audit:
      lines.append(f'audit v{v}: written before keyed hashes (no MAC to check)')
      continue
    want = audit.get('subjects', {}).get('key_id')
    if want and want != key_id(key):
      lines.append(f'audit v{v}: written with another key (key id {want}, this key {key_id(key)})')
      bad += 1
    elif hmac.compare_digest(audit['mac'], mac(audit, key)):
      users_, pairs_ = _subject_hashes(audit)
      lines.append(f'audit v{v}: MAC ok; {audit["request"]} request of {len(users_)} user(s)'
                   f'{f", {len(pairs_)} interaction(s)" if pairs_ else ""}, {audit["time_utc"]}')
    else:
      lines.append(f'audit v{v}: MAC MISMATCH: the audit was changed after it was written')
      bad += 1
  if users is not None or interactions is not None:
    request = read_request(users, interactions)
    items = [(u, None) for u in request.users] if request.kind == 'users' else request.pairs
    for u, i in items:
      v = forgotten_by(audits, key, u, i)
      what = f'user {u}' if i is None else f'interaction {u},{i}'
      lines.append(f'{what}: forgotten by request v{v}' if v is not None else f'{what}: in no audit')
  if bad:
    raise UserError('; '.join(lines))
  return lines
