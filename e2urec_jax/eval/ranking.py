"""Ranking metrics, HR@k and NDCG@k, on the test split and, separately, on the forget set.

For each set, a fixed random subset of its positive (label 1) samples (config.eval.
ranking_max_positives; 0 = all) is chosen, and each chosen positive's target item is ranked among
config.eval.ranking_negatives items its user never rated (in any split: the raw ratings), drawn
from the items of the raw ratings. A prompt names an item by its title alone, so the candidates are
titles: one item per distinct title, and a title the user rated (under any item: synthetic data
repeats titles) is never a negative. Every candidate is scored by the model's P(Yes) on the
positive's own prompt with the target item swapped: the same profile and the same history items
the positive's prompt shows (data/prompts.py renders it, data/encode.py fits it to
max_input_length exactly as `prepare` did: a longer title may cost a history item).

The draws depend on nothing but a fixed seed (`SEED`) and the sample's (user, item): the choice
of positives ranks them by a keyed hash, and each positive's negatives come from
`default_rng([SEED, user, item])`. So every model of a run ranks the same candidates, and the
test split's candidates are the same for every seed of the experiment (the forget set's change
with the seed's forget users, as every forget metric does). Ties are pessimistic
(eval/metrics.py's `positive_ranks`): a positive ranks below every negative scored equal to it.

`build(ctx)` draws and tokenises the candidates once per evaluation (cached per process, so the
seeds of one run share the raw data, the tokenizer and the test split's prompts); `measure`
scores them with one model and returns each set's {'k', 'negatives', 'positives', 'hr', 'ndcg'}.
"""
import dataclasses
import hashlib
import json
import os
import tempfile

import numpy as np
import pandas as pd

from e2urec_jax import storage
from e2urec_jax.data import encode, readers, tokenizer as tokenizer_lib
from e2urec_jax.data.prompts import template_for
from e2urec_jax.data.protocol import protocol_of
from e2urec_jax.data.tokens import SplitArrays
from e2urec_jax.eval import metrics
from e2urec_jax.train.inference import iterate_eval

SPLIT = 'ranking'  # the candidates' token arrays, as one more split of the context's data
SETS = ('test', 'forget')
SEED = 0x52414E4B  # 'RANK': the draws' fixed seed (never config.seed: every seed ranks the same test candidates)
_CHUNK = 1000  # prompts per tokenizer call


def settings(config) -> dict:
  """config.eval's ranking fields (defaults for a config saved before they existed)."""
  ev = config.eval
  return {'negatives': int(ev.get('ranking_negatives', 19)), 'k': int(ev.get('ranking_k', 10)),
          'max_positives': int(ev.get('ranking_max_positives', 200))}


# ------------------------------------------------------------------ the draws (pure numpy)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x):
  """splitmix64's finaliser, elementwise over uint64 (wrapping arithmetic)."""
  x = np.asarray(x, np.uint64)
  x = (x ^ (x >> np.uint64(30))) * _M1
  x = (x ^ (x >> np.uint64(27))) * _M2
  return x ^ (x >> np.uint64(31))


def sample_keys(users, items, seed: int = SEED):
  """A keyed hash of each (user, item): the order positives are chosen in.  # uint64 [N]"""
  u = np.asarray(users, np.int64).astype(np.uint64)
  i = np.asarray(items, np.int64).astype(np.uint64)
  with np.errstate(over='ignore'):
    return _mix(_mix(np.uint64(seed) ^ u) ^ i)


def select_positives(users, items, labels, rows, max_positives: int, seed: int = SEED):
  """The rows (of `rows`) whose label is 1; at most `max_positives` of them (0 = all), those with
  the smallest `sample_keys`: the same samples whatever else the set holds.  # int64 [P], ascending"""
  rows = np.asarray(rows, np.int64)
  positive = rows[np.asarray(labels)[rows] == 1]
  if max_positives and len(positive) > max_positives:
    keys = sample_keys(np.asarray(users)[positive], np.asarray(items)[positive], seed)
    positive = positive[np.argsort(keys, kind='stable')[:max_positives]]
  return np.sort(positive)


def draw_negatives(users, items, rated_items, pool, n: int, seed: int = SEED):
  """`n` distinct items of `pool` that each user never rated, drawn by default_rng([seed, user,
  item]); `rated_items(user)` is every item the user rated. A user with fewer unrated items gets
  them all, the rest of the row -1.  # int64 [P, n]"""
  pool = np.asarray(pool, np.int64)
  out = np.full((len(users), n), -1, np.int64)
  for j, (user, item) in enumerate(zip(np.asarray(users, np.int64), np.asarray(items, np.int64))):
    allowed = pool[~np.isin(pool, rated_items(int(user)))]
    take = min(n, len(allowed))
    rng = np.random.default_rng([int(seed), int(user), int(item)])
    out[j, :take] = rng.choice(allowed, size=take, replace=False)
  return out


# ------------------------------------------------------------------ the candidates' prompts
@dataclasses.dataclass
class Candidates:
  """One set's ranking lists: `items[p]` = [positive's item, its negatives] (-1: none), the token
  arrays of every present candidate (`arrays`, a SplitArrays), where each sits in [P, C] and which
  distinct prompt it is (`unique`: the rows scored; a user's positives often share negatives, and
  without history in the prompt their prompts are the same: each is scored once)."""
  users: np.ndarray  # int64 [P]
  items: np.ndarray  # int64 [P, C]
  arrays: object  # data.tokens.SplitArrays of the M present candidates
  slots: np.ndarray  # int64 [M]: flat index into [P, C]
  unique: np.ndarray  # int64 [U]: rows of `arrays` with distinct prompts
  prompt_of: np.ndarray  # int64 [M]: the index into `unique` of each candidate's prompt


@dataclasses.dataclass
class _Sources:
  """What every set's prompts read: the raw data's pieces, the tokenizer and the template."""
  pool: np.ndarray  # sorted: one item (the smallest id) per distinct title of the raw ratings' items
  pool_codes: np.ndarray  # the title code of each pool item
  catalogue: np.ndarray  # sorted items of the raw ratings
  title_code: np.ndarray  # the title code of each catalogue item
  rated_users: np.ndarray  # raw ratings' users, sorted
  rated_items: np.ndarray  # their items, in that order
  titles: dict  # item -> title
  profiles: dict
  subjects: dict
  tok: object
  template: object
  layout: str
  specials: dict
  max_len: int

  def rated(self, user: int) -> np.ndarray:
    """The pool items the user rated: those whose title the user rated under any item."""
    lo, hi = np.searchsorted(self.rated_users, [user, user + 1])
    codes = self.title_code[np.searchsorted(self.catalogue, self.rated_items[lo:hi])]
    return self.pool[np.isin(self.pool_codes, codes)]


_CACHE = {}  # {key: _Sources or Candidates}: the last evaluation's (one run's seeds share them)


def _sources_key(ctx) -> str:
  config = ctx.config
  body = json.dumps([storage.abspath(ctx.workdir), ctx.data.digest, config.data.to_dict(),
                     config.model.name_or_path, config.model.tokenizer], sort_keys=True, default=str)
  return hashlib.sha256(body.encode()).hexdigest()


def _sources(ctx, key: str) -> _Sources:
  if key in _CACHE:
    return _CACHE[key]
  config = ctx.config
  with tempfile.TemporaryDirectory() as scratch:
    raw = readers.read_run_source(config, ctx.workdir, scratch)  # the workdir's own synthetic copy
  ratings = raw.ratings
  order = np.argsort(ratings['user'].to_numpy(), kind='stable')
  users = raw.users.set_index('user')
  titles = dict(zip(raw.items['item'].to_numpy().tolist(), raw.items['title']))
  # A prompt shows an item by its title alone: the candidates are titles (one item each, the smallest
  # id), and a title the user rated under any item is no negative.
  rated_items = ratings['item'].to_numpy().astype(np.int64)
  catalogue = np.unique(rated_items)
  codes = {}
  title_code = np.asarray([codes.setdefault(titles[int(i)], len(codes)) for i in catalogue], np.int64)
  _, first = np.unique(title_code, return_index=True)
  tok = tokenizer_lib.load_tokenizer(config.model, ctx.workdir)
  layout, decoder_start = tokenizer_lib.resolve_layout(config.model)
  found = _Sources(
      pool=catalogue[np.sort(first)], pool_codes=title_code[np.sort(first)], catalogue=catalogue,
      title_code=title_code, rated_users=ratings['user'].to_numpy().astype(np.int64)[order],
      rated_items=rated_items[order], titles=titles,
      profiles=dict(zip(users.index.tolist(), users['profile'])),
      subjects=dict(zip(users.index.tolist(), users['subject'])) if 'subject' in users else {},
      tok=tok, template=template_for(protocol_of(config.data), layout, raw), layout=layout,
      specials=tokenizer_lib.special_ids(tok, layout, decoder_start), max_len=int(config.data.max_input_length))
  _CACHE.clear()  # another run's (or the data before a forget request): nothing to share
  _CACHE[key] = found
  return found


def _shown_history(ctx, split_file: str, users, items) -> list:
  """(history items, their ratings) each (user, item) sample's stored prompt shows, from the
  split's parquet (prepare's history, cut to the items that fitted max_input_length)."""
  path = storage.local_copy(os.path.join(ctx.workdir, 'data', f'{split_file}.parquet'))
  table = pd.read_parquet(path, columns=['user', 'item', 'history_items', 'history_ratings', 'history_shown'])
  index = pd.MultiIndex.from_arrays([table['user'].to_numpy(), table['item'].to_numpy()])
  at = index.get_indexer(pd.MultiIndex.from_arrays([np.asarray(users), np.asarray(items)]))
  if (at < 0).any():
    raise ValueError(f'{path}: {int((at < 0).sum())} ranked samples have no row (data changed after prepare?)')
  out = []
  for row in at:
    hist, stars, shown = table['history_items'].iat[row], table['history_ratings'].iat[row], table['history_shown'].iat[row]
    cut = len(hist) - int(shown)
    out.append((list(hist[cut:]), list(stars[cut:])))
  return out


def _candidates(ctx, src: _Sources, split: str, split_file: str, rows, negatives: int) -> Candidates:
  arrays = ctx.data.splits[split]
  users, positives = arrays.user_id[rows].astype(np.int64), arrays.item_id[rows].astype(np.int64)
  items = np.concatenate([positives[:, None], draw_negatives(users, positives, src.rated, src.pool, negatives)], 1)
  history = _shown_history(ctx, split_file, users, positives)
  slots = np.flatnonzero(items.reshape(-1) >= 0)
  p_of = slots // items.shape[1]
  # Candidates with the same pieces (a user's positives share negatives) are rendered and tokenised once.
  pieces = {}
  which = np.asarray([pieces.setdefault((int(users[p]), tuple(history[p][0]), tuple(history[p][1]),
                                         src.titles[int(i)]), len(pieces))
                      for p, i in zip(p_of, items.reshape(-1)[slots])], np.int64)
  keys = list(pieces)
  batch = {'profile': [src.profiles[u] for u, _, _, _ in keys],
           'history_titles': [[src.titles[int(i)] for i in h] for _, h, _, _ in keys],
           'history_ratings': [list(r) for _, _, r, _ in keys],
           'target_title': [t for _, _, _, t in keys],
           'subject': [str(src.subjects.get(u, '')) for u, _, _, _ in keys]}
  rendered = []
  for start in range(0, len(keys), _CHUNK):
    part = {k: v[start:start + _CHUNK] for k, v in batch.items()}
    rendered += encode.fit_prompts(part, src.tok, src.template, src.layout, src.specials, src.max_len)['input_ids']
  ids = [rendered[j] for j in which]
  lengths = np.asarray([len(x) for x in ids], np.int32)
  prompt_ids = np.full((len(ids), src.max_len), src.specials['pad_id'], np.int32)  # [M, max_input_length]
  for j, x in enumerate(ids):
    prompt_ids[j, :len(x)] = x
  _, unique, prompt_of = np.unique(np.concatenate([prompt_ids, lengths[:, None]], 1), axis=0, return_index=True,
                                   return_inverse=True)
  return Candidates(users=users, items=items, slots=slots, unique=unique.astype(np.int64),
                    prompt_of=prompt_of.reshape(-1).astype(np.int64), arrays=SplitArrays(
      prompt_ids=prompt_ids, prompt_len=lengths, label=(slots % items.shape[1] == 0).astype(np.int32),
      user_id=users[p_of], item_id=items.reshape(-1)[slots]))


def set_rows(ctx) -> dict:
  """{set: (split, parquet, rows)}: the test split's rows and the forget set's (train rows), if it has any."""
  train, test = ctx.data.splits['train'], ctx.data.splits['test']
  out = {'test': ('test', 'test', np.arange(len(test.label)))}
  forget = np.flatnonzero(train.is_forget)
  if len(forget):  # none left when forget requests deleted every forget user: nothing to rank there
    out['forget'] = ('train', 'train', forget)
  return out


def build(ctx) -> dict | None:
  """{'test': Candidates, 'forget': Candidates} for ctx's data and config.eval, or None when
  config.eval.ranking_negatives is 0 (ranking off)."""
  opts = settings(ctx.config)
  if opts['negatives'] <= 0:
    return None
  key = _sources_key(ctx)
  src = _sources(ctx, key)
  out = {}
  for name, (split, split_file, rows) in set_rows(ctx).items():
    arrays = ctx.data.splits[split]
    chosen = select_positives(arrays.user_id, arrays.item_id, arrays.label, rows, opts['max_positives'])
    pairs = np.stack([arrays.user_id[chosen], arrays.item_id[chosen]]).astype(np.int64)
    set_key = (key, split, hashlib.sha256(pairs.tobytes()).hexdigest(), opts['negatives'])
    if set_key not in _CACHE:
      _CACHE[set_key] = _candidates(ctx, src, split, split_file, chosen, opts['negatives'])
    out[name] = _CACHE[set_key]
  return out


def _with_split(ctx, arrays):
  """The context with the candidates as one more split of token arrays, sharing everything else."""
  return dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, splits={**ctx.data.splits, SPLIT: arrays}))


def scores(ctx, cands: Candidates, predictor):
  """P(Yes) of every candidate under one model, NaN where a list has no such candidate.  # [P, C]"""
  out = np.full(cands.items.size, np.nan)
  if not len(cands.slots):
    return out.reshape(cands.items.shape)
  view = _with_split(ctx, cands.arrays)
  p_yes = []
  # full_batches: one batch shape per bucket, the evaluation's own (no compile for a last odd batch)
  for device, real in iterate_eval(view, SPLIT, cands.unique, full_batches=True):
    logits = predictor.logits(device)  # [batch, answer, vocab]
    p_yes.append(metrics.yes_probability(logits[:real, 0], ctx.data.yes_id, ctx.data.no_id))
  out[cands.slots] = np.concatenate(p_yes)[cands.prompt_of]
  return out.reshape(cands.items.shape)


def ranking_entry(score_matrix, k: int, negatives: int) -> dict:
  """One set's entry of results.json: HR@k and NDCG@k of the positives (column 0) of `score_matrix`."""
  ranks = metrics.positive_ranks(score_matrix)
  return {'k': int(k), 'negatives': int(negatives), 'positives': int(len(ranks)),
          'hr': metrics.hit_rate(ranks, k), 'ndcg': metrics.ndcg(ranks, k)}


def measure(ctx, candidates: dict, predictor) -> dict:
  """{'test': entry, 'forget': entry} of one model (`ranking_entry`)."""
  opts = settings(ctx.config)
  return {name: ranking_entry(scores(ctx, cands, predictor), opts['k'], opts['negatives'])
          for name, cands in candidates.items()}


def info(ctx, candidates: dict) -> dict:
  """results.json's top-level 'ranking': how the lists were drawn."""
  opts = settings(ctx.config)
  return {**opts, 'seed': SEED, 'positives': {n: int(len(c.users)) for n, c in candidates.items()},
          'pool': "the raw ratings' items, one per title, whose title the user never rated", 'ties': 'pessimistic',
          'score': "P(Yes) on the positive's prompt with the target item swapped"}
