"""Tiny raw files in the real formats, and a small config, for the data tests (no network, no real data)."""
import os

import numpy as np

from e2urec_jax.config import default_config

GENRE_FLAGS = 19


def write_ml100k(folder: str, *, num_users: int = 12, num_items: int = 15, per_user: int = 14, seed: int = 0,
                 ties: bool = True) -> list[tuple[int, int, int, int]]:
  """u.data / u.user / u.item with a latin-1 title; returns the ratings (user, item, rating, ts).

  ties=True gives some ratings the same timestamp (also across users) to exercise the sort order.
  """
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  rows = []
  for u in range(1, num_users + 1):
    items = rng.choice(np.arange(1, num_items + 1), per_user, replace=False)
    times = 880_000_000 + np.sort(rng.integers(0, 2_000 if ties else 10**7, per_user))
    rows += [(u, int(i), int(rng.integers(1, 6)), int(t)) for i, t in zip(items, times)]
  with open(os.path.join(folder, 'u.data'), 'w', encoding='latin-1') as f:
    f.writelines(f'{u}\t{i}\t{r}\t{t}\n' for u, i, r, t in rows)
  with open(os.path.join(folder, 'u.user'), 'w', encoding='latin-1') as f:
    f.writelines(f'{u}|{20 + u}|{"MF"[u % 2]}|writer|0{u:04d}\n' for u in range(1, num_users + 1))
  with open(os.path.join(folder, 'u.item'), 'w', encoding='latin-1') as f:
    for i in range(1, num_items + 1):
      title = 'Misérables, Les (1995)' if i == 1 else f'Movie {i} (19{50 + i})'
      flags = ['0'] * GENRE_FLAGS
      flags[1 + i % 18] = '1'
      f.write(f'{i}|{title}|01-Jan-1995||http://x/{i}|{"|".join(flags)}\n')
  return rows


def tiny_config(raw_dir: str, **data):
  """ml-100k reader on tiny files, a trained tokenizer, everything small."""
  c = default_config()
  c.jax_cache_dir = ''
  c.progress = False
  c.data.source = 'ml-100k'
  c.data.raw_dir = raw_dir
  c.data.num_samples = 1000
  c.data.history_k = 4
  c.data.min_history = 3
  c.data.max_input_length = 200
  c.data.bucket_lengths = (64, 128, 200)
  c.model.tokenizer = 'train'
  c.model.tokenizer_vocab_size = 300
  for k, v in data.items():
    c.data[k] = v
  return c


def independent_protocol(rows, *, min_history, history_k, num_samples, split, threshold):
  """The protocol recomputed with plain Python loops (not the package's vectorised code).

  Returns {'train'|'valid'|'test': [(user, item, label, [history items shown])]}.
  """
  ordered = sorted(rows, key=lambda r: (r[3], r[0], r[1]))
  seen, samples = {}, []
  for user, item, rating, ts in ordered:
    history = seen.setdefault(user, [])
    if len(history) >= min_history:
      shown = history[-history_k:] if history_k else []
      samples.append((user, item, int(rating > threshold), list(shown), ts))
    history.append(item)
  samples = samples[-num_samples:]
  n_train = int(round(len(samples) * split[0]))
  n_valid = int(round(len(samples) * split[1]))
  return {'train': samples[:n_train], 'valid': samples[n_train:n_train + n_valid],
          'test': samples[n_train + n_valid:]}
