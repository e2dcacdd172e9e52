"""What a forget request leaves behind and what the operator's key opens: keyed hashes of the ids
(HMAC-SHA256 under the key file, outside the workdir; the salted sha256 of audits written before
them), the key itself (read, or created 0600), forget/audit_v<N>.json (written with a MAC under
the key), the check of an audit (`audit`) and `predict`'s refusal of forgotten users.
"""
import datetime
import hashlib
import hmac
import json
import os
import secrets

from e2urec_jax import forget_scrub, runtime, storage
from e2urec_jax.data import idfiles
from e2urec_jax.errors import UserError
from e2urec_jax.forget_request import Request, read_request
from e2urec_jax.methods import spec

FORGET_DIR = 'forget'
PENDING_FILE = 'pending.json'  # forget.py's record of the request being served (keyed hashes only)
LEGACY_SALT = 'salt.key'  # where requests before keyed hashes kept their salt (inside the workdir)
SCHEME = 'hmac-sha256'
HASH_NOTE = ('HMAC-SHA256(key, id) (pairs: user NUL item; categories: "category" NUL user NUL category) under the '
             'operator\'s key file (--forget_key), which is never in the workdir; key_id = HMAC-SHA256(key, "key-id")')
REMAINS = ('The frozen original model (models/original) was trained on these records and still encodes them; '
           'forget_v{n} is built on top of it and makes the served model answer as if they were unseen, '
           'approximately: their influence is reduced, not provably removed. Only retraining from scratch '
           'without them is exact.')


SCRUB_ONLY = ('These records were in no train sample (as target or in a shown history): only validation/test '
              'samples or raw ratings that formed no sample held them, so no model was trained on them and none '
              'was changed; they were removed from the workdir\'s data.')


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
  key, save = open_key(key_file, workdir, create=create, command=command)
  save()
  return key


def open_key(key_file: str | None, workdir: str, *, create: bool, command: str):
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
  if os.path.isdir(key_file):
    raise UserError(f'--forget_key={key_file} is a folder; pass the key file itself (e.g. '
                    f'--forget_key={os.path.join(key_file, "forget.key")}, created on the first forget request)')
  if not os.path.exists(key_file):
    if not create:
      raise UserError(f'--forget_key={key_file}: no such file; pass the key file the forget requests of this '
                      'workdir were served with')
    key = secrets.token_hex(32).encode()  # the file holds it as text, read back as these bytes
    return key, lambda: _write_key(key_file, key)
  try:
    with open(key_file, 'rb') as f:
      key = f.read().strip()
  except OSError as e:
    raise UserError(f'--forget_key={key_file}: cannot read it ({e.strerror or e}); pass a key file you can read')
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


def check_legacy_salt(forget_dir: str) -> None:
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


def check_key(audits: dict, key: bytes, key_file: str) -> None:
  for v, audit in sorted(audits.items()):
    want = audit.get('subjects', {}).get('key_id')
    if want and want != key_id(key):
      raise UserError(f'--forget_key={key_file} is not the key audit v{v} was written with (key id {want}, this '
                      f'key {key_id(key)}); pass the key file the forget requests of this workdir were served with')


def mac(audit: dict, key: bytes) -> str:
  body = {k: v for k, v in audit.items() if k != 'mac'}
  return keyed(key, json.dumps(body, sort_keys=True, default=runtime.json_default))


def read_audits(forget_dir: str) -> dict:
  """{version: audit} of the audits in `forget_dir` (forget/audit_v<N>.json); a file that is not a whole
  audit (truncated, corrupt, edited into something else) is a one-line UserError naming it."""
  out = {}
  if not storage.isdir(forget_dir):
    return out
  for name in storage.listdir(forget_dir):
    number = name[len('audit_v'):-len('.json')]
    if not (name.startswith('audit_v') and name.endswith('.json') and number.isdigit()):
      continue
    path = os.path.join(forget_dir, name)
    try:
      audit = runtime.read_json(path)
    except ValueError as e:  # json's JSONDecodeError, a UnicodeDecodeError
      raise UserError(f'{path} is corrupt or truncated ({e}); {RESTORE}') from None
    if not (isinstance(audit, dict) and audit.get('version') == int(number) and 'request' in audit):
      raise UserError(f'{path} is not the audit of request v{int(number)} (no "version": {int(number)} and '
                      f'"request" in it); {RESTORE}')
    out[int(number)] = audit
  return out


RESTORE = 'restore it from a backup of the workdir (an audit holds its MAC under the key: it cannot be written again)'


def unaudited(workdir: str, audits: dict, *, unfinished_ok: bool = False) -> list[str]:
  """One line per request version with no audit: a version below the latest audit whose file is gone,
  and a published model (models/forget_v<N>) with no audit_v<N>; an unfinished request (pending.json's
  version) is named as such, or left out with `unfinished_ok` (forget itself, which finishes it)."""
  forget_dir = os.path.join(workdir, FORGET_DIR)
  models_dir = os.path.join(workdir, 'models')
  models = {int(n[len('forget_v'):]) for n in (storage.listdir(models_dir) if storage.isdir(models_dir) else [])
            if n.startswith('forget_v') and n[len('forget_v'):].isdigit()}
  pending_path = os.path.join(forget_dir, PENDING_FILE)
  pending = runtime.read_json(pending_path).get('version') if storage.exists(pending_path) else None
  lines = []
  for v in range(1, max([*audits, *models, pending or 0], default=0) + 1):
    if v in audits:
      continue
    if v == pending:
      if not unfinished_ok:
        lines.append(f'audit v{v}: not written yet: request v{v} is unfinished ({FORGET_DIR}/{PENDING_FILE}); rerun '
                     'the same forget command to finish it')
      continue
    later = max((u for u in audits if u > v), default=None)
    what = [f'{FORGET_DIR}/audit_v{v}.json is missing' + (f' while audit v{later} exists' if later else '')]
    if v in models:
      what.append(f'models/forget_v{v} has no audit')
    lines.append(f'audit v{v}: MISSING: {", and ".join(what)}; {RESTORE.replace("restore it", "restore the audit")}')
  return lines


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


def category_keyed(key: bytes, user: str, category: str) -> str:
  """The keyed hash of a (user, category) request (a domain of its own: three parts, pairs have two)."""
  return keyed(key, 'category', user, category)


def category_forgotten_by(audits: dict, key: bytes, user: str, category: str) -> int | None:
  """The version of the category request that forgot `user`'s ratings of `category`; None if none did."""
  for v, audit in sorted(audits.items()):
    if audit.get('request') == 'category' and \
        category_keyed(key, user, category) in audit.get('subjects', {}).get('categories', []):
      return v
  return None


def misspelt(what: str, id_: str, known: list, audits: dict, key: bytes, *, user: str | None = None) -> str | None:
  """The one-line refusal of an id that matches no record exactly but differs only by its spelling
  (leading zeros, a sign, other Unicode digits, spaces: idfiles.loose) from an id of the data
  (`known`: collections of ids) or from one an audit forgot (an item: in a pair with `user`);
  None when it resembles none. Ids are never matched loosely: this only names the likely one."""
  guess = next((g for k in known if (g := idfiles.near(id_, k)) is not None), None)
  note = ''
  if guess is None:  # a forgotten id is in no data any more: its audit still knows it
    canonical = idfiles.loose(id_)
    if canonical != id_:
      v = forgotten_by(audits, key, canonical) if user is None else \
          forgotten_by(audits, key, idfiles.loose(user), canonical)
      if v is not None:
        guess, note = canonical, f' (forgotten by request v{v})'
  if guess is None:
    return None
  return (f'{idfiles.cut(id_)} is not {"an" if what == "item" else "a"} {what} of this run; did you mean '
          f'{idfiles.cut(guess)}?{note} (ids are compared exactly, as the source spells them)')


def unknown_id(what: str, id_: str, known: list, audits: dict, key: bytes) -> str:
  """The refusal of an id that matches no record exactly (`misspelt`'s, else that it is unknown)."""
  return misspelt(what, id_, known, audits, key) or \
      (f'{what} {idfiles.cut(id_)} is not in the data of this workdir (no samples, no raw record, no audit); check the '
       f"id: ids are spelled as in the source's {what} column")


# ------------------------------------------------------------------ the audit
def deleted_helpers() -> set:
  """Helper models (MethodSpec.helpers) a request deletes where they learnt its records: not listed
  among the models trained with them (those a helper only reads, the retrained model, are)."""
  return {h.name for h in spec.helpers() if h.trained_on_forget}


def build_audit(pending: dict, request: Request, key: bytes) -> dict:
  """forget/audit_v<N>.json of a finished request (`pending`, forget.py's record of it), its MAC last."""
  n = pending['version']
  scrub_only = pending['method'] is None
  trained_with = [m for m in pending['models'] if m not in deleted_helpers() and m != f'forget_v{n}']
  audit = {
      'version': n,
      'time_utc': now_utc(), 'started_utc': pending['started_utc'],
      'request': request.kind,
      'subjects': {'scheme': SCHEME, 'key_id': key_id(key),
                   'users': sorted(keyed(key, u) for u in request.users),
                   # a category request: the (user, item) pairs it resolved to, hashed when it was planned
                   'pairs': pending.get('pair_hashes') or sorted(keyed(key, u, i) for u, i in request.pairs),
                   **({'categories': sorted(category_keyed(key, u, c) for u, c in request.categories)}
                      if request.kind == 'category' else {}),
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


def now_utc() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


# ------------------------------------------------------------------ what the key opens
def refuse_forgotten(workdir: str, pairs, *, key_file: str | None, allow: bool) -> None:
  """For `predict`: a UserError naming the first pair whose user (or interaction) a forget request
  forgot, unless `allow`. The audits hold keyed hashes only, so the check needs the key."""
  if allow:
    return
  forget_dir = os.path.join(storage.abspath(workdir), FORGET_DIR)
  audits = read_audits(forget_dir)
  gaps = unaudited(storage.abspath(workdir), audits)
  if gaps:  # whom a request without its audit forgot is unknown: any pair could be one of theirs
    raise UserError(f'predict cannot tell which users were forgotten: {gaps[0]}'
                    + (f' (and {len(gaps) - 1} more: run `audit`)' if len(gaps) > 1 else '')
                    + '; or pass --allow_forgotten to score anyway')
  if not audits:
    return
  if not key_file:
    raise UserError(f'{workdir} served {len(audits)} forget request(s); predict refuses their users and checks each '
                    'one through the audits\' keyed hashes, which needs the key: pass --forget_key=FILE (or set '
                    'E2UREC_FORGET_KEY), or --allow_forgotten to score forgotten users anyway')
  check_legacy_salt(forget_dir)
  key = read_key(key_file, storage.abspath(workdir), create=False, command='predict')
  check_key(audits, key, key_file)
  lines = pairs['line'] if 'line' in pairs else [None] * len(pairs)
  for user, item, line in zip(pairs['user_id'], pairs['item_id'], lines):
    v = forgotten_by(audits, key, str(user), str(item))
    if v is not None:
      where = f'line {line}: ' if line is not None else ''
      cut = idfiles.cut
      what = f'user {cut(user)}' if audits[v].get('request') == 'users' else f'interaction ({cut(user)}, {cut(item)})'
      raise UserError(f'{where}{what} was forgotten by forget request v{v}; the served model does not score '
                      'forgotten users (pass --allow_forgotten to score anyway)')


def verify_audits(workdir: str, *, key_file: str | None, users: str | None = None,
                  interactions: str | None = None) -> list[str]:
  """The `audit` command: each audit's MAC under the key, every version without an audit (`unaudited`),
  and which request forgot the given ids."""
  forget_dir = os.path.join(storage.abspath(workdir), FORGET_DIR)
  audits = read_audits(forget_dir)
  gaps = unaudited(storage.abspath(workdir), audits)
  if not audits and not gaps:
    raise UserError(f'{workdir} has no forget audits ({forget_dir}/audit_v*.json)')
  key = read_key(key_file, storage.abspath(workdir), create=False, command='audit')
  runtime.refuse_staging(storage.abspath(workdir), 'audit')
  by_version, bad = {int(g.split(':')[0][len('audit v'):]): g for g in gaps}, len(gaps)
  for v, audit in sorted(audits.items()):
    if 'mac' not in audit:
      by_version[v] = f'audit v{v}: written before keyed hashes (no MAC to check)'
      continue
    want = audit.get('subjects', {}).get('key_id')
    if want and want != key_id(key):
      by_version[v] = f'audit v{v}: written with another key (key id {want}, this key {key_id(key)})'
      bad += 1
    elif hmac.compare_digest(audit['mac'], mac(audit, key)):
      users_, pairs_ = _subject_hashes(audit)
      by_version[v] = (f'audit v{v}: MAC ok; {audit["request"]} request of {len(users_)} user(s)'
                       f'{f", {len(pairs_)} interaction(s)" if pairs_ else ""}, {audit["time_utc"]}')
    else:
      by_version[v] = f'audit v{v}: MAC MISMATCH: the audit was changed after it was written'
      bad += 1
  lines = [by_version[v] for v in sorted(by_version)]
  if users is not None or interactions is not None:
    request = read_request(users, interactions)
    items = [(u, None) for u in request.users] if request.kind == 'users' else request.pairs
    known = forget_scrub.read_keys(storage.abspath(workdir))  # (user ids, item ids) of the data now
    for u, i in items:
      v = forgotten_by(audits, key, u, i)
      what = f'user {idfiles.cut(u, quote=False)}' if i is None else \
          f'interaction {idfiles.cut(u, quote=False)},{idfiles.cut(i, quote=False)}'
      if v is not None:
        lines.append(f'{what}: forgotten by request v{v}')
        continue
      # An id as typed that is no id of the run ('03' for '3') would read "in no audit": refused instead.
      where = request.where.get(u if i is None else (u, i))
      where = f'{where}: ' if where and where != '--users' else ''
      wrong = misspelt('user', u, [known[0]] if known else [], audits, key)
      if wrong is None and i is not None:
        wrong = misspelt('item', i, [known[1]] if known else [], audits, key, user=u)
      if wrong is not None:
        raise UserError(where + wrong)
      absent = known is not None and (u not in known[0] or (i is not None and i not in known[1]))
      lines.append(f'{what}: in no audit' + ('; not in the data of this workdir either' if absent else ''))
  if bad:
    raise UserError('; '.join(lines))
  return lines
