"""config.data.protocol='paper' against a transcription of the original code (justarter/E2URec).

The functions `original_*` below transcribe, step by step, what the original's notebooks and
scripts do: data_preprocess/ml-1m.ipynb (parse, merge, sort, histories, the 80/10/10 split),
data_preprocess/load_prompt_ml1m.py (the "simple" prompt, K = 10) and split_ml-1m.ipynb (the
last N samples of valid + test, np.random SISA shards, the random.shuffle of the train users,
the forget users, the RecEraser chunks). They run on small ML-1M-format files written here and
on the real ML-100K when a copy is present; the package must pick the same users, shards and
prompts.
"""
import json
import os
import random

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, load_config
from data_testing import tiny_config
from e2urec_jax.data import movielens, prompts, protocol
from e2urec_jax.data.layouts import ENCODER_DECODER
from e2urec_jax.data.prompts import PaperTemplate

ML100K = os.environ.get('E2UREC_ML100K', os.path.join(REPO, '..', 'shared', 'data', 'ml-100k'))
POOL = 300  # config.data.num_samples: the original's "last 100,000" at this file's scale
TITLES = {1: 'Toy Story (1995)', 2: "Schindler's List (1993)", 3: 'Misérables, Les (1995)',
          4: 'Say "Cheese" Don\'t Smile (1990)', 5: 'Jumanji (1995)'}


# ----------------------------------------------------------------- test files
def write_ml1m(folder, *, num_users=50, num_items=60, per_user=45, seed=0):
  """ratings.dat / users.dat / movies.dat ('::', latin-1) with tied timestamps, 1-star ratings,
  titles with quotes and accents, occupation 0 and every age code."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  lines = []
  for u in range(1, num_users + 1):
    items = rng.choice(np.arange(1, num_items + 1), per_user, replace=False)
    times = 970_000_000 + np.sort(rng.integers(0, 3_000, per_user))
    lines += [f'{u}::{i}::{int(rng.integers(1, 6))}::{t}\n' for i, t in zip(items, times)]
  rng.shuffle(lines)  # the file's order must not matter
  with open(os.path.join(folder, 'ratings.dat'), 'w', encoding='latin-1') as f:
    f.writelines(lines)
  ages = (1, 18, 25, 35, 45, 50, 56)
  with open(os.path.join(folder, 'users.dat'), 'w', encoding='latin-1') as f:
    f.writelines(f'{u}::{"MF"[u % 2]}::{ages[u % 7]}::{u % 21}::{10000 + u}\n' for u in range(1, num_users + 1))
  with open(os.path.join(folder, 'movies.dat'), 'w', encoding='latin-1') as f:
    f.writelines(f'{i}::{TITLES.get(i, f"Movie {i} (19{40 + i})")}::Drama|Comedy\n' for i in range(1, num_items + 1))


# ------------------------------------------- the original code, transcribed
AGE = {1: 'under 18', 18: '18-24', 25: '25-34', 35: '35-44', 45: '45-49', 50: '50-55', 56: 'above 56'}
JOB = ['other or not specified', 'academic/educator', 'artist', 'clerical/admin', 'college/grad student',
       'customer service', 'doctor/health care', 'executive/managerial', 'farmer', 'homemaker', 'K-12 student',
       'lawyer', 'programmer', 'retired', 'sales/marketing', 'scientist', 'self-employed', 'technician/engineer',
       'tradesman/craftsman', 'unemployed', 'writer']


def original_ml1m_samples(source_dir):
  """ml-1m.ipynb: df_data (sorted, with histories, >= 5 earlier ratings) and its 80/10/10 split."""
  user_data = []
  for line in open(os.path.join(source_dir, 'users.dat'), 'r', encoding='latin-1').readlines():
    user_id, gender, age, job, zipcode = [x.strip() for x in line.strip().split('::')]
    gender = 'male' if gender == 'M' else 'female'
    user_data.append([int(user_id), gender, AGE[int(age)], JOB[int(job)], zipcode])
  df_user = pd.DataFrame(user_data, columns=['User ID', 'Gender', 'Age', 'Job', 'Zipcode'])
  movie_data = []
  for line in open(os.path.join(source_dir, 'movies.dat'), 'r', encoding='ISO-8859-1').readlines():
    ele = line.strip().split('::')
    movie_data.append([int(ele[0].strip()), ele[1].strip(), ele[2].strip().split('|')[0]])
  df_movie = pd.DataFrame(movie_data, columns=['Movie ID', 'Movie title', 'Movie genre'])
  rating_data = []
  user_list, movie_list = list(df_user['User ID']), list(df_movie['Movie ID'])
  for line in open(os.path.join(source_dir, 'ratings.dat'), 'r').readlines():
    user, movie, rating, timestamp = [int(x.strip()) for x in line.strip().split('::')]
    if user in user_list and movie in movie_list:
      rating_data.append([user, movie, rating, timestamp, 1 if rating > 3 else 0])
  df_ratings = pd.DataFrame(rating_data, columns=['User ID', 'Movie ID', 'rating', 'timestamp', 'labels'])
  df_data = pd.merge(df_ratings, df_user, on=['User ID'], how='inner')
  df_data = pd.merge(df_data, df_movie, on=['Movie ID'], how='inner')
  df_data = df_data.sort_values(by=['timestamp', 'User ID', 'Movie ID'], kind='stable')
  df_data = df_data.reset_index(drop=True)
  history = {'ID': {k: [] for k in set(df_data['User ID'])}, 'rating': {k: [] for k in set(df_data['User ID'])}}
  column = {'ID': [], 'rating': []}
  id_to_title = {}
  for _, row in df_data.iterrows():
    user_id, movie_id = row['User ID'], row['Movie ID']
    column['ID'].append(history['ID'][user_id].copy())
    column['rating'].append(history['rating'][user_id].copy())
    history['ID'][user_id].append(movie_id)
    history['rating'][user_id].append(row['rating'])
    id_to_title.setdefault(movie_id, row['Movie title'])
  id_to_title = json.loads(json.dumps({int(k): v for k, v in id_to_title.items()}))  # str keys, as the json file
  df_data['history ID'] = column['ID']
  df_data['history rating'] = column['rating']
  df_data = df_data[df_data['history ID'].apply(len) >= 5].reset_index(drop=True)
  train_num = int(0.8 * len(df_data))
  valid_num = int(0.1 * len(df_data))
  return df_data, train_num, valid_num, id_to_title


def original_prompt(row, id_to_title, K=10):
  """load_prompt_ml1m.py: row_to_prompt + get_template(temp_type='simple')."""
  d = {k: row[k] for k in ('User ID', 'Movie ID', 'history ID', 'Gender', 'Age', 'Job', 'history rating')}
  d['Movie ID'] = id_to_title[str(d['Movie ID'])]
  d['history ID'] = list(map(lambda x: id_to_title[str(x)], d['history ID']))
  d['history ID'] = d['history ID'][-K:]
  d['history rating'] = d['history rating'][-K:]
  for i, (name, star) in enumerate(zip(d['history ID'], d['history rating'])):
    suffix = ' stars)' if star > 1 else ' star)'
    d['history ID'][i] = f'{name} ({star}' + suffix
  nominative = 'she' if d['Gender'] == 'female' else 'he'
  objective = 'Her' if d['Gender'] == 'female' else 'His'
  return (f"The user is a {d['Gender']}. "
          f"{objective} job is {d['Job']}. {objective} age is {d['Age']}.\n"
          f"{nominative.capitalize()} watched the following movies in order in the past, and rated them:\n"
          f"{list(map(lambda x: f'{x[0]}. {x[1]}', enumerate(d['history ID'])))}\n"
          f"Based on the movies {nominative} has watched, deduce if {nominative} will like the movie "
          f"***{d['Movie ID']}***.\n"
          f"Note that more stars the user rated the movie, the user liked the movie more.\n"
          f"You should ONLY tell me yes or no.")


def original_split(df_data, train_num, id_to_title, *, pool, seed, num_shards=4, p=0.2):
  """split_ml-1m.ipynb on the valid + test rows: the pool, SISA 'shared', train/valid/test
  prompts, forget users, SISA shard retain sets, RecEraser ('eraser') chunks."""
  valid_num = int(0.1 * len(df_data))
  valid_df, test_df = df_data[train_num:train_num + valid_num], df_data[train_num + valid_num:]
  df = pd.concat([valid_df, test_df])
  df = df.iloc[-pool:]
  df = df.reset_index(drop=True)
  np.random.seed(seed)
  df['shared'] = np.random.choice(list(range(num_shards)), size=len(df))
  train_df = df.iloc[:int(0.6 * df.shape[0])]
  # data2json.py + the notebook's second cell: prompts of valid and test, the last `pool`, 60/20/20.
  rella = [{'input': original_prompt(r, id_to_title), 'output': 'Yes.' if int(r['labels']) == 1 else 'No.'}
           for _, r in pd.concat([valid_df, test_df]).iterrows()]
  rella = rella[-pool:]
  length = len(rella)
  prompts = {'train': rella[:int(0.6 * length)], 'valid': rella[int(0.6 * length):int(0.8 * length)],
             'test': rella[int(0.8 * length):]}
  unique_user_list = train_df['User ID'].unique()
  user_num = len(unique_user_list)
  random.seed(seed)
  random.shuffle(unique_user_list)
  forget_user = unique_user_list[:int(p * user_num)]
  forget_index = train_df[train_df['User ID'].isin(forget_user)].index.tolist()
  sisa = {}
  for shared in range(num_shards):
    shared_index = train_df[train_df['shared'] == shared].index.tolist()
    sisa[shared] = [idx for idx in range(len(train_df)) if idx not in forget_index and idx in shared_index]
  retain_user = unique_user_list[int(p * user_num):]
  eraser = {}
  for shared in range(num_shards):
    n = len(retain_user)
    shared_user = retain_user[int(n * shared / num_shards):int(n * (shared + 1) / num_shards)]
    shared_index = train_df[train_df['User ID'].isin(shared_user)].index.tolist()
    eraser[shared] = [idx for idx in range(len(train_df)) if idx not in forget_index and idx in shared_index]
  return {'train_df': train_df, 'prompts': prompts, 'forget_user': [int(u) for u in forget_user],
          'forget_index': forget_index, 'sisa': sisa, 'eraser': eraser}


# ----------------------------------------------------------------- the tests
@pytest.fixture(scope='module')
def ml1m(tmp_path_factory):
  """Our `prepare` under protocol 'paper' and the transcription, on the same small ML-1M files."""
  from e2urec_jax.data.prepare import prepare
  raw = str(tmp_path_factory.mktemp('ml1m_raw'))
  write_ml1m(raw)
  config = tiny_config(raw, source='ml-1m', protocol='paper', num_samples=POOL, history_k=10, min_history=5,
                       max_input_length=512, bucket_lengths=(512,))
  config.model.tokenizer_vocab_size = 500
  work = str(tmp_path_factory.mktemp('ml1m_work'))
  manifest = prepare(config, work)
  frames = {s: pd.read_parquet(os.path.join(work, 'data', f'{s}.parquet')) for s in ('train', 'valid', 'test')}
  df_data, train_num, _, id_to_title = original_ml1m_samples(raw)
  assert len(df_data) - train_num >= POOL  # the pool lies in valid + test, as the original's 100,000 do
  original = original_split(df_data, train_num, id_to_title, pool=POOL, seed=42)
  return config, manifest, frames, original, (df_data, train_num, id_to_title)


def test_same_samples_forget_users_and_shards_as_the_original(ml1m):
  _, manifest, frames, original, _ = ml1m
  train, otrain = frames['train'], original['train_df']
  assert len(train) == len(otrain) == int(0.6 * POOL)
  assert list(zip(train['user'], train['item'])) == list(zip(otrain['User ID'], otrain['Movie ID']))
  assert len(frames['valid']) == len(original['prompts']['valid'])
  assert sorted(manifest['forget_users']) == sorted(original['forget_user'])
  assert len(original['forget_user']) == int(0.2 * otrain['User ID'].nunique())
  np.testing.assert_array_equal(np.flatnonzero(train['is_forget'].to_numpy()), original['forget_index'])
  np.testing.assert_array_equal(train['sisa_shard'].to_numpy(), otrain['shared'].to_numpy())
  retain = ~train['is_forget'].to_numpy()
  for k in range(4):
    sisa_k = np.flatnonzero(retain & (train['sisa_shard'].to_numpy() == k))
    np.testing.assert_array_equal(sisa_k, original['sisa'][k])
    eraser_k = np.flatnonzero(retain & (train['receraser_shard'].to_numpy() == k))
    np.testing.assert_array_equal(eraser_k, original['eraser'][k])
  # A shard holds one chunk of retain users and one of forget users: user-disjoint, every shard affected.
  assert (train.groupby('user')['receraser_shard'].nunique() == 1).all()
  assert set(train.loc[train['is_forget'], 'receraser_shard']) == {0, 1, 2, 3}


def test_prompts_are_the_originals_character_for_character(ml1m):
  _, _, frames, original, _ = ml1m
  for split in ('train', 'valid', 'test'):
    want = original['prompts'][split]
    assert list(frames[split]['prompt']) == [r['input'] for r in want], split
    assert list(frames[split]['answer']) == [r['output'] for r in want], split
  assert frames['train']['history_shown'].max() == 10  # nothing was cut to fit


def test_a_known_prompt_verbatim():
  text = PaperTemplate(ENCODER_DECODER).render(
      'The user is a male. His job is programmer. His age is 25-34.',
      ['Toy Story (1995)', "Schindler's List (1993)", 'Heat (1995)'], [4.0, 1.0, 5.0], 'Jumanji (1995)', 'he')
  assert text == (
      'The user is a male. His job is programmer. His age is 25-34.\n'
      'He watched the following movies in order in the past, and rated them:\n'
      '[\'0. Toy Story (1995) (4 stars)\', "1. Schindler\'s List (1993) (1 star)", \'2. Heat (1995) (5 stars)\']\n'
      'Based on the movies he has watched, deduce if he will like the movie ***Jumanji (1995)***.\n'
      'Note that more stars the user rated the movie, the user liked the movie more.\n'
      'You should ONLY tell me yes or no.')
  she = PaperTemplate(ENCODER_DECODER).render('The user is a female. Her job is other or not specified. '
                                              'Her age is under 18.', ['A (1990)'], [2], 'B (1991)', 'she')
  assert she.split('\n')[1] == 'She watched the following movies in order in the past, and rated them:'
  assert 'deduce if she will like the movie ***B (1991)***.' in she
  # The original's pronoun rule: 'M' is he, every other gender code she (and 'female' in the profile).
  assert [prompts.movielens_subject(g) for g in ('M', 'F', ' m ', 'X')] == ['he', 'she', 'he', 'she']
  assert prompts.movielens_profile('X', 'writer', '25-34', paper=True).startswith('The user is a female. Her job')


def test_other_seeds_draw_as_the_original_would(ml1m):
  """seeded_assignment is a pure function of the train split's users: another seed gives the
  original code's draws under that seed (what a run over several seeds recomputes)."""
  config, _, frames, _, (df_data, train_num, id_to_title) = ml1m
  users = frames['train']['user'].to_numpy()
  for seed in (7, 2024):
    original = original_split(df_data, train_num, id_to_title, pool=POOL, seed=seed)
    forget_users, is_forget, sisa, receraser = protocol.seeded_assignment(users, config.data, seed)
    assert list(forget_users) == sorted(original['forget_user'])
    np.testing.assert_array_equal(np.flatnonzero(is_forget), original['forget_index'])
    np.testing.assert_array_equal(sisa, original['train_df']['shared'].to_numpy())
    for k in range(4):
      np.testing.assert_array_equal(np.flatnonzero(~is_forget & (receraser == k)), original['eraser'][k])


def test_default_protocol_draws_are_unchanged(ml1m):
  """The 'default' protocol's draws are those of the functions it always used."""
  config, _, frames, _, _ = ml1m
  d = config.data.copy_and_resolve_references()
  d.protocol = 'default'
  users = frames['train']['user'].to_numpy()
  forget_users, is_forget, sisa, receraser = protocol.seeded_assignment(users, d, 42)
  np.testing.assert_array_equal(forget_users, protocol.choose_forget_users(users, 0.2, 42))
  np.testing.assert_array_equal(is_forget, np.isin(users, forget_users))
  np.testing.assert_array_equal(sisa, protocol.sisa_shards(len(users), 4, 42))
  np.testing.assert_array_equal(receraser, protocol.receraser_shards(users, 4, 42))


def original_forget_users_ml100k(folder, num_samples, seed=42, p=0.2):
  """The original's sample rule (ml-1m.ipynb) and forget-user draw (split_ml-1m.ipynb) on u.data:
  sort by (timestamp, user, item), >= 5 earlier ratings, the last `num_samples`, the first
  int(0.6 n) as train, its users in order of appearance, random.seed(seed) + random.shuffle."""
  df = pd.read_csv(os.path.join(folder, 'u.data'), sep='\t', names=['User ID', 'Movie ID', 'rating', 'timestamp'])
  df = df.sort_values(by=['timestamp', 'User ID', 'Movie ID'], kind='stable').reset_index(drop=True)
  seen = {}
  keep = []
  for user in df['User ID']:
    keep.append(seen.get(user, 0) >= 5)
    seen[user] = seen.get(user, 0) + 1
  df = df[keep].reset_index(drop=True).iloc[-num_samples:].reset_index(drop=True)
  train_df = df.iloc[:int(0.6 * df.shape[0])]
  unique_user_list = train_df['User ID'].unique()
  random.seed(seed)
  random.shuffle(unique_user_list)
  return [int(u) for u in unique_user_list[:int(p * len(unique_user_list))]]


@pytest.mark.skipif(not os.path.exists(os.path.join(ML100K, 'u.data')), reason='no local ML-100K copy')
def test_ml100k_forget_users_are_the_original_rules_draw():
  config = load_config('configs/ml100k.py')
  assert config.data.protocol == 'paper'
  raw = movielens.read_ml100k(ML100K)
  splits = protocol.apply_protocol(raw.ratings, config.data, int(config.seed))
  want = original_forget_users_ml100k(ML100K, int(config.data.num_samples), int(config.seed))
  print(f'ML-100K, protocol paper, seed {config.seed}: {len(want)} forget users of '
        f'{splits.samples["train"]["user"].nunique()} train users; first in draw order {want[:10]}; '
        f'smallest ids {sorted(want)[:10]}')
  assert list(splits.forget_users) == sorted(want)
  # The GroupLens release (checked on it): 590 train users, 118 forget users, drawn in this order.
  assert splits.samples['train']['user'].nunique() == 590 and len(want) == 118
  assert want[:10] == [439, 524, 430, 844, 455, 213, 651, 684, 396, 825]
