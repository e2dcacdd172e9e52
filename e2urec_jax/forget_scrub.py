"""Removing forgotten records from a workdir: samples, prompts, token arrays, caches, raw copies.

Everything under <workdir>/data is rewritten in one temporary folder and renamed into
place (runtime.atomic_dir), so a crash leaves either the old data or the scrubbed data,
never a mix; running the scrub again is a no-op. Rows go by user (a user's request) or by
(user, item) pair (an interaction's request: the sample whose target it is, and the same
user's samples whose prompt shows it in the history).
"""
import json
import os
import shutil

import numpy as np
import pandas as pd

from e2urec_jax import runtime, stamps, storage
from e2urec_jax.data import idfiles, protocol
from e2urec_jax.data.encode import length_stats
from e2urec_jax.errors import UserError
from e2urec_jax.stamps import file_sha256

SPLITS = ('train', 'valid', 'test')
SKIPPED = ('hf_cache',)  # caches `prepare` needs no more: deleted, not copied


def read_frames(workdir: str) -> dict:
  data = os.path.join(workdir, 'data')
  runtime.recover_dir(data)
  frames = {}
  for split in SPLITS:
    path = os.path.join(data, f'{split}.parquet')
    if not os.path.exists(path):
      raise UserError(f'{path} is missing; this workdir has no prepared data (run `prepare` or `train` first)')
    frames[split] = pd.read_parquet(path)
  return frames


def known_ids(frames: dict) -> tuple[dict, dict]:
  """({user key: user id}, {item key: item id}) of the samples: the source's ids as its key columns
  spell them. Where the source's item ids are the integers themselves (MovieLens, synthetic), items
  only seen in a shown history count too, by their canonical spelling (str of the integer)."""
  users, items = {}, {}
  for f in frames.values():
    users.update(zip(f['user_key'].astype(str), f['user'].astype(np.int64)))
    items.update(zip(f['item_key'].astype(str), f['item'].astype(np.int64)))
  if items and all(k == str(v) for k, v in items.items()):
    for f in frames.values():
      for history in f['history_items']:
        items.update((str(int(i)), int(i)) for i in history)
  return users, items


def read_keys(workdir: str) -> tuple[set, set] | None:
  """(user ids, item ids) the workdir's data holds (samples and raw copy, as the source spells them),
  read without changing anything (`audit`); None when there is no local prepared data to read."""
  data = os.path.join(workdir, 'data')
  if storage.is_remote(workdir) or not all(os.path.exists(os.path.join(data, f'{s}.parquet')) for s in SPLITS):
    return None
  frames = {s: pd.read_parquet(os.path.join(data, f'{s}.parquet'),
                               columns=['user', 'item', 'user_key', 'item_key', 'history_items']) for s in SPLITS}
  users, items = known_ids(frames)
  raw_users, raw_pairs = raw_records(workdir)
  return set(users) | raw_users, set(items) | {i for _, i in raw_pairs}


def row_masks(frames: dict, users, pairs) -> dict:
  """split -> bool [rows] of the samples to forget: users' rows, or rows that hold one of the pairs."""
  users = set(int(u) for u in users)
  pairs = set((int(u), int(i)) for u, i in pairs)
  out = {}
  for split, f in frames.items():
    user, item = f['user'].to_numpy(), f['item'].to_numpy()
    mask = np.isin(user, list(users)) if users else np.zeros(len(f), bool)
    if pairs:
      by_user = {}
      for u, i in pairs:
        by_user.setdefault(u, set()).add(i)
      for row in np.flatnonzero(np.isin(user, list(by_user))):
        items = by_user[int(user[row])]
        if int(item[row]) in items or items.intersection(int(h) for h in f['history_items'].iloc[row]):
          mask[row] = True
    out[split] = mask
  return out


def scrub_data(workdir: str, users, pairs) -> dict:
  """Drops the rows from <workdir>/data (parquet, tokens, manifest, raw copy, caches); returns counts."""
  data = os.path.join(workdir, 'data')
  frames = read_frames(workdir)
  masks = row_masks(frames, users, pairs)
  raw_dir = os.path.join(data, 'synthetic')
  if not any(m.any() for m in masks.values()) and not os.path.isdir(os.path.join(data, 'hf_cache')) \
      and not _raw_holds(raw_dir, users, pairs):
    return {}
  for split, mask in masks.items():
    if mask.all():
      raise UserError(f'forgetting these records would leave the {split} split empty; '
                      'the workdir cannot serve this request (prepare a larger data set)')
  removed = {}
  with runtime.atomic_dir(data) as tmp:
    for entry in os.listdir(data):
      src = os.path.join(data, entry)
      if entry in SKIPPED or entry.startswith('.'):
        removed[f'data/{entry}'] = 'deleted (cache)'
        continue
      (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, entry))
    kept = {}
    for split, frame in frames.items():
      keep = ~masks[split]
      kept[split] = frame[keep].reset_index(drop=True)
      kept[split].to_parquet(os.path.join(tmp, f'{split}.parquet'), index=False)
      _filter_tokens(os.path.join(tmp, 'tokens', split), frame, keep)
      removed[f'data/{split}.parquet'] = int((~keep).sum())
      removed[f'data/tokens/{split}'] = int((~keep).sum())
    if os.path.isdir(raw_dir):
      removed.update(_scrub_raw(os.path.join(tmp, 'synthetic'), users, pairs))
    _update_manifest(os.path.join(tmp, 'manifest.json'), kept, users, os.path.join(tmp, 'synthetic'))
    stamps.write(tmp, exclude=SKIPPED)  # the scrubbed files are the data now (its prepared digest stays)
  return removed


def _filter_tokens(folder: str, frame: pd.DataFrame, keep: np.ndarray) -> None:
  user_ids = np.load(os.path.join(folder, 'user_id.npy'))
  if len(user_ids) != len(frame) or not np.array_equal(user_ids, frame['user'].to_numpy()):
    raise UserError(f'{folder} and its parquet table disagree (rows or order); prepare the data again '
                    '(delete <workdir>/data) before serving forget requests')
  for name in sorted(os.listdir(folder)):
    if name.endswith('.npy'):
      path = os.path.join(folder, name)
      np.save(path, np.load(path)[keep])


def raw_records(workdir: str) -> tuple[set, set]:
  """(user ids, (user, item) pairs) of the source copy in the workdir (data/synthetic: u.data, u.user),
  records that formed no sample included, as the files spell them (strings, compared exactly); empty
  sets when the workdir holds no copy."""
  raw_dir = os.path.join(workdir, 'data', 'synthetic')
  pairs = set(_raw_pairs(raw_dir))
  users = {u for u, _ in pairs} | set(_raw_user_ids(raw_dir))
  return users, pairs


def raw_id(key: str) -> int:
  """The integer id of a raw copy's id (the generator writes them as plain decimal numbers)."""
  if not (key.isascii() and key.isdigit() and len(key) <= 18):
    raise UserError(f'the raw copy holds the id {idfiles.cut(key)}, which is not a plain number; prepare the data '
                    'again')
  return int(key)


def _raw_pairs(raw_dir: str):
  path = os.path.join(raw_dir, 'u.data')
  if os.path.exists(path):
    with open(path, encoding='latin-1') as f:
      for line in f:
        fields = line.split('\t')
        if len(fields) >= 2:
          yield fields[0].strip(), fields[1].strip()


def _raw_user_ids(raw_dir: str):
  path = os.path.join(raw_dir, 'u.user')
  if os.path.exists(path):
    with open(path, encoding='latin-1') as f:
      for line in f:
        if line.strip():
          yield line.split('|')[0].strip()


def _as_keys(users, pairs) -> tuple[set, set]:
  """Sample ids (ints) as the raw copy spells them (its ids are the integers themselves)."""
  return {str(int(u)) for u in users}, {(str(int(u)), str(int(i))) for u, i in pairs}


def _raw_holds(raw_dir: str, users, pairs) -> bool:
  users, pairs = _as_keys(users, pairs)
  return any(u in users or (u, i) in pairs for u, i in _raw_pairs(raw_dir)) or \
      any(u in users for u in _raw_user_ids(raw_dir))


def _scrub_raw(raw_dir: str, users, pairs) -> dict:
  """The generator's MovieLens-format copy inside the workdir: rating lines, user lines, planted values.
  Lines go by their id fields as written, compared exactly with the ids' spelling."""
  ids = sorted(set(int(u) for u in users))
  users, pairs = _as_keys(users, pairs)
  out = {}
  path = os.path.join(raw_dir, 'u.data')
  if os.path.exists(path):
    lines = open(path, encoding='latin-1').read().splitlines(keepends=True)
    keep = []
    for line in lines:
      fields = [f.strip() for f in line.split('\t')]
      if len(fields) < 2 or (fields[0] not in users and (fields[0], fields[1]) not in pairs):
        keep.append(line)
    open(path, 'w', encoding='latin-1').writelines(keep)
    out['data/synthetic/u.data'] = len(lines) - len(keep)
  path = os.path.join(raw_dir, 'u.user')
  if os.path.exists(path) and users:
    lines = open(path, encoding='latin-1').read().splitlines(keepends=True)
    keep = [line for line in lines if line.split('|')[0].strip() not in users]
    open(path, 'w', encoding='latin-1').writelines(keep)
    out['data/synthetic/u.user'] = len(lines) - len(keep)
  path = os.path.join(raw_dir, 'planted.json')
  if os.path.exists(path) and users:
    planted = runtime.read_json(path)
    for key in ('bias', 'taste', 'idiosyncrasy'):  # per-user rows, indexed by user id - 1
      for u in ids:
        if key in planted and 0 < u <= len(planted[key]):
          planted[key][u - 1] = None
    with open(path, 'w') as f:
      json.dump(planted, f)
    out['data/synthetic/planted.json'] = len(ids)
  return out


def _update_manifest(path: str, frames: dict, users, raw_dir: str) -> None:
  """Counts and lists recomputed from the kept rows; the forgotten users leave every id list."""
  m = runtime.read_json(path)
  train = frames['train']
  forget = train['is_forget'].to_numpy().astype(bool)
  subsets = {'train': train, 'valid': frames['valid'], 'test': frames['test'], 'forget': train[forget],
             'retain': train[~forget]}
  m['counts'] = {k: int(len(v)) for k, v in subsets.items()}
  m['users'] = {k: int(v['user'].nunique()) for k, v in subsets.items()}
  m['label_positive_rate'] = {k: round(float(v['label'].mean()), 4) if len(v) else None for k, v in subsets.items()}
  m['time_range'] = {k: [int(f['timestamp'].min()), int(f['timestamp'].max())] for k, f in frames.items()}
  num_shards = max(1, len(next(iter(m.get('shards', {}).values()), [])))
  m['shards'] = protocol.shard_counts(train, num_shards)
  gone = set(int(u) for u in users)
  keys = dict(zip(m.get('forget_users', []), m.get('forget_user_keys', [])))
  m['forget_users'] = [u for u in m.get('forget_users', []) if u not in gone]
  m['forget_user_keys'] = [keys[u] for u in m['forget_users'] if u in keys]
  m['tokens']['forget_users'] = [u for u in m['tokens'].get('forget_users', []) if u not in gone]
  m['token_lengths'] = {k: length_stats(f['prompt_len']) for k, f in frames.items()}
  m['token_lengths']['all'] = length_stats(np.concatenate([f['prompt_len'].to_numpy() for f in frames.values()]))
  m['example_prompt'] = str(train['prompt'].iloc[0])
  if os.path.isdir(raw_dir):
    for name in os.listdir(raw_dir):
      if name in m.get('source_sha256', {}):
        m['source_sha256'][name] = file_sha256(os.path.join(raw_dir, name))
    if os.path.exists(os.path.join(raw_dir, 'u.data')):
      table = np.loadtxt(os.path.join(raw_dir, 'u.data'), dtype=np.int64, usecols=(0, 1), ndmin=2)
      m['raw'] = {'ratings': int(len(table)), 'users': int(len(np.unique(table[:, 0]))),
                  'items': int(len(np.unique(table[:, 1])))}
  m['scrubbed'] = int(m.get('scrubbed', 0)) + 1  # forget requests applied to this data (no ids here)
  runtime.write_json(path, m)


def delete(workdir: str, paths) -> list[str]:
  """Removes the given workdir-relative files/folders; returns those that existed."""
  gone = []
  for rel in paths:
    path = os.path.join(workdir, rel)
    if os.path.isdir(path):
      shutil.rmtree(path)
      gone.append(rel)
    elif os.path.exists(path):
      os.remove(path)
      gone.append(rel)
  return gone


def resume_checkpoints(workdir: str) -> list[str]:
  """Workdir-relative orbax resume folders of every phase (intermediate states of training runs)."""
  out = []
  phases = os.path.join(workdir, 'phases')
  for root, dirs, _ in os.walk(phases):
    if 'ckpt' in dirs:
      out.append(os.path.relpath(os.path.join(root, 'ckpt'), workdir))
      dirs.remove('ckpt')
  return sorted(out)
