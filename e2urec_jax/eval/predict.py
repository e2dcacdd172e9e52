"""`predict`: P(Yes) for (user, item) pairs from a CSV, with any model in the workdir.

A pair is turned into a prompt exactly as training samples are: the user's profile and
their `history_k` most recent ratings in the data (all of them, as of now), then the item.
Ids are the source's own (as in the raw files).
"""
import dataclasses
import os
import tempfile

import numpy as np
import pandas as pd

from e2urec_jax.data import encode, idfiles, readers, tokenizer as tokenizer_lib
from e2urec_jax.data.prompts import template_for
from e2urec_jax.data.tokens import SplitArrays
from e2urec_jax.errors import UserError
from e2urec_jax.eval.model_scores import score
from e2urec_jax.train.inference import load_predictor

SPLIT = 'predict'


def read_pairs(path: str) -> pd.DataFrame:
  """user_id, item_id (as the file spells them) and line (for messages) of the pairs file `path`
  (data/idfiles.py: an optional header, one pair a line; a bad line is a one-line error naming it)."""
  if not path:
    raise UserError('predict needs --input=CSV with user_id,item_id lines')
  rows = idfiles.read_pairs(path, '--input')
  pairs = pd.DataFrame({'user_id': [u for u, _, _ in rows], 'item_id': [i for _, i, _ in rows],
                        'line': [n for _, _, n in rows]})
  pairs.attrs['path'] = path  # named in messages about its lines
  return pairs


def pair_prompts(config, pairs: pd.DataFrame, scratch: str, workdir: str = '') -> pd.DataFrame:
  """Prompt pieces (profile, history titles/ratings, target title, subject) of each pair, from the raw data."""
  raw = readers.read_run_source(config, workdir, scratch)
  users = raw.users.set_index('key')
  items = raw.items.set_index('key')
  for col, table, what in (('user_id', users, 'user'), ('item_id', items, 'item')):
    # Ids are the source's strings (its `key` column), compared exactly: '03' is not user '3'.
    known = set(table.index.astype(str))
    unknown = [i for i, v in enumerate(pairs[col]) if v not in known]
    if unknown:
      where = f'line {pairs["line"].iloc[unknown[0]]}: ' if 'line' in pairs else ''
      where = f'{pairs.attrs["path"]} {where}' if pairs.attrs.get('path') else where
      more = f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''
      given = str(pairs[col].iloc[unknown[0]])
      guess = idfiles.near(given, known)
      hint = (f'; did you mean {idfiles.cut(guess)}? (ids are compared exactly, as the source spells them)'
              if guess is not None else f'; use the {what} ids of the raw files')
      raise UserError(f'{where}{col} {idfiles.cut(given)}{more} not in the {raw.name} data{hint}')
  users.index, items.index = users.index.astype(str), items.index.astype(str)
  order = np.lexsort((raw.ratings['item'].to_numpy(), raw.ratings['timestamp'].to_numpy()))
  by_user = raw.ratings.iloc[order].groupby('user')
  titles = raw.items.set_index('item')['title']
  k = int(config.data.history_k)
  rows = []
  for user_key, item_key in zip(pairs['user_id'], pairs['item_id']):
    user = users.loc[user_key]
    history = by_user.get_group(user['user']).tail(k) if user['user'] in by_user.groups else raw.ratings.iloc[:0]
    rows.append({'profile': user['profile'], 'history_titles': list(titles.loc[history['item']]),
                 'history_ratings': list(history['rating']), 'target_title': items.loc[item_key, 'title'],
                 'subject': str(user.get('subject', ''))})
  return pd.DataFrame(rows), raw


def predict(ctx, name: str, pairs: pd.DataFrame) -> np.ndarray:
  config = ctx.config
  with tempfile.TemporaryDirectory() as scratch:
    frame, raw = pair_prompts(config, pairs, scratch, ctx.workdir)
    tok = tokenizer_lib.load_tokenizer(config.model, ctx.workdir)
    layout, decoder_start = tokenizer_lib.resolve_layout(config.model)
    specials = tokenizer_lib.special_ids(tok, layout, decoder_start)
    template = template_for(config.data.get('protocol', 'default'), layout, raw)
    enc = encode.encode_frame(frame, tok, template, layout=layout, specials=specials,
                              max_len=int(config.data.max_input_length), cache_file=os.path.join(scratch, 'p.arrow'),
                              progress=False, desc='tokenising pairs')
  n = len(frame)
  arrays = SplitArrays(prompt_ids=enc['prompt_ids'], prompt_len=enc['prompt_len'], label=np.zeros(n, np.int32),
                       user_id=np.zeros(n, np.int64), item_id=np.zeros(n, np.int64))
  return score(_with_split(ctx, arrays), load_predictor(ctx, name), SPLIT, np.arange(n), desc=f'{name}/predict')['p_yes']


def _with_split(ctx, arrays):
  """The context with one more split of token arrays (the pairs), sharing everything else."""
  return dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, splits={**ctx.data.splits, SPLIT: arrays}))
