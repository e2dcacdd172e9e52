"""The embedded default data set: seeded MovieLens-100K-format files with planted structure.

Written as u.data / u.user / u.item so the real ML-100K reader and the whole protocol
run on it unchanged. The rating of user u for item i is

  round(3.5 + bias_u + quality_i + taste_u . genres_i + idiosyncrasy_u[style_i] + noise), clipped to 1..5

and the prompt shows each part, so a tiny model trained for a minute learns it:
- quality_i: the first word of the title is a quality adjective (Dreadful .. Masterful);
  titles are only these words (adjective, style, genres), so prompts stay short;
- bias_u: the user's history ratings are all shifted by it;
- taste_u . genres_i: titles contain their genre words, history ratings show which genres the user likes;
  taste also leans on gender and age, so the profile line carries some of it;
- idiosyncrasy_u: a private preference over title *styles* (Midnight, Golden, ...), drawn
  independently per user. A model learns it only from that user's own samples (their
  profile identifies them), so a model trained on a user answers them differently from
  one that never saw them: what forgetting is measured by.
The true parameters are written to planted.json beside the files.
"""
import json
import os

import numpy as np

from e2urec_jax.data.movielens import ML100K_GENRES
from e2urec_jax.errors import UserError

QUALITY_WORDS = ('Dreadful', 'Dull', 'Decent', 'Brilliant', 'Masterful')  # quintiles of item quality
STYLE_WORDS = ('Midnight', 'Golden', 'Silent', 'Electric', 'Hidden', 'Broken', 'Crimson', 'Distant')
# One plain word per genre in titles (short prompts: 'Film-Noir' would cost three tokens).
TITLE_WORDS = {"Children's": 'Family', 'Film-Noir': 'Noir', 'Sci-Fi': 'Space'}
OCCUPATIONS = ('administrator', 'artist', 'doctor', 'educator', 'engineer', 'entertainment', 'executive',
               'healthcare', 'homemaker', 'lawyer', 'librarian', 'marketing', 'none', 'other', 'programmer',
               'retired', 'salesman', 'scientist', 'student', 'technician', 'writer')
START = 1_577_836_800  # 2020-01-01 UTC
SPAN = 365 * 86_400


def generate(cfg, seed: int, out_dir: str, population: int = 0) -> dict:
  """Writes u.data, u.user, u.item and planted.json into out_dir; returns the planted parameters.

  population: 0 draws the experiment's users; another number draws a disjoint population of the
  same world (the same items, titles and planted item structure, users from another random
  stream): what a backbone is pretrained on (config.pretrain)."""
  genres = ML100K_GENRES[1:]  # 'unknown' is not a genre to plant
  if not 2 <= cfg.num_genres <= len(genres):
    raise UserError(f'config.data.synthetic.num_genres={cfg.num_genres}: use 2..{len(genres)} '
                    '(the MovieLens-100K genres)')
  if cfg.num_users < 2 or cfg.num_items < 10 or cfg.ratings_per_user < 2:
    raise UserError('config.data.synthetic: need num_users >= 2, num_items >= 10, ratings_per_user >= 2')
  num_styles = int(cfg.num_styles)
  if not 1 <= num_styles <= len(STYLE_WORDS):
    raise UserError(f'config.data.synthetic.num_styles={num_styles}: use 1..{len(STYLE_WORDS)}')
  rng = np.random.default_rng([seed, 7])
  n_users, n_items, n_genres = cfg.num_users, cfg.num_items, cfg.num_genres
  genre_idx = rng.choice(len(genres), n_genres, replace=False)
  genre_names = [genres[g] for g in np.sort(genre_idx)]

  # Items: one or two genres, quality, style, year.
  item_genres = np.zeros((n_items, n_genres))
  first = rng.integers(n_genres, size=n_items)
  item_genres[np.arange(n_items), first] = 1.0
  second = rng.integers(n_genres, size=n_items)
  two = (rng.random(n_items) < 0.3) & (second != first)
  item_genres[np.flatnonzero(two), second[two]] = 1.0
  genre_mix = item_genres / item_genres.sum(1, keepdims=True)
  quality = rng.normal(0.0, 1.2, n_items)
  tier = np.searchsorted(np.quantile(quality, [0.2, 0.4, 0.6, 0.8]), quality)
  style = rng.integers(num_styles, size=n_items)
  years = rng.integers(1960, 2020, size=n_items)
  titles = [' '.join([QUALITY_WORDS[tier[i]], STYLE_WORDS[style[i]]] +
                     [TITLE_WORDS.get(genre_names[g], genre_names[g]) for g in np.flatnonzero(item_genres[i])])
            for i in range(n_items)]  # 'Brilliant Midnight Western Comedy': short, and every word means something

  # Users: profile, bias, taste (partly demographic), private style preference.
  if population:  # the items above are the world's; the people are another draw
    rng = np.random.default_rng([seed, 7, int(population)])
  gender = rng.choice(['M', 'F'], n_users)
  age = rng.integers(18, 66, n_users)
  occupation = rng.choice(OCCUPATIONS, n_users)
  demographic = rng.normal(0.0, 0.4, (2, 3, n_genres))  # [gender, age band, genre]
  band = np.digitize(age, [30, 45])
  taste = demographic[(gender == 'F').astype(int), band] + rng.normal(0.0, 0.5, (n_users, n_genres))
  bias = rng.normal(0.0, 0.8, n_users)
  idiosyncrasy = rng.normal(0.0, float(cfg.idiosyncrasy), (n_users, num_styles))

  # Ratings: users watch more of what they like; sequential timestamps per user.
  rows = []
  for u in range(n_users):
    n = int(np.clip(round(cfg.ratings_per_user * np.exp(rng.normal(0, 0.4))), 2, n_items))
    affinity = genre_mix @ taste[u] + 0.3 * quality
    p = np.exp(0.8 * affinity)
    chosen = rng.choice(n_items, n, replace=False, p=p / p.sum())
    latent = (3.5 + bias[u] + quality[chosen] + genre_mix[chosen] @ taste[u] + idiosyncrasy[u, style[chosen]]
              + rng.normal(0.0, cfg.noise, n))
    rating = np.clip(np.round(latent), 1, 5).astype(int)
    start = START + rng.integers(0, int(SPAN * 0.7))
    times = start + np.cumsum(rng.exponential(SPAN * 0.3 / n, n)).astype(np.int64) + 1
    rows += [(u + 1, int(i) + 1, int(r), int(t)) for i, r, t in zip(chosen, rating, times)]

  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'u.data'), 'w', encoding='latin-1') as f:
    f.writelines(f'{u}\t{i}\t{r}\t{t}\n' for u, i, r, t in rows)
  with open(os.path.join(out_dir, 'u.user'), 'w', encoding='latin-1') as f:
    f.writelines(f'{u + 1}|{age[u]}|{gender[u]}|{occupation[u]}|{rng.integers(10000, 99999)}\n'
                 for u in range(n_users))
  with open(os.path.join(out_dir, 'u.item'), 'w', encoding='latin-1') as f:
    for i in range(n_items):
      flags = ['0'] * len(ML100K_GENRES)
      for g in np.flatnonzero(item_genres[i]):
        flags[ML100K_GENRES.index(genre_names[g])] = '1'
      f.write(f'{i + 1}|{titles[i]}|01-Jan-{years[i]}||http://example.invalid/{i + 1}|{"|".join(flags)}\n')
  planted = {'genres': genre_names, 'styles': list(STYLE_WORDS[:num_styles]), 'quality': quality,
             'style': style, 'bias': bias, 'taste': taste, 'idiosyncrasy': idiosyncrasy, 'num_ratings': len(rows)}
  with open(os.path.join(out_dir, 'planted.json'), 'w') as f:
    json.dump({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in planted.items()}, f)
  return planted
