"""Prompts -> token ids through HF `datasets`, fitting each prompt into max_input_length.

Truncation keeps the meaning of a prompt: the target item and the question are never
cut. A prompt that is too long loses history items, oldest first, keeping as many
recent ones as fit; only if no history item fits is the profile cut (by words); if the
target and the question alone do not fit, that is a UserError. The ids always come
from tokenising the final text (not from splicing pieces), so they are exactly what
the tokenizer gives for the stored prompt.
"""
import hashlib

import numpy as np

from e2urec_jax import runtime
from e2urec_jax.data import tokenizer as tokenizer_lib
from e2urec_jax.errors import UserError

COLUMNS = ('profile', 'history_titles', 'history_ratings', 'target_title')
SUBJECT = 'subject'  # optional column: the pronoun the paper's template refers to the user with


def rows_of(batch: dict) -> list:
  """(profile, titles, ratings, target, subject) per sample of a batch of COLUMNS (+ SUBJECT)."""
  n = len(batch['target_title'])
  subjects = batch.get(SUBJECT) or [''] * n
  return [(batch['profile'][i], list(batch['history_titles'][i]), list(batch['history_ratings'][i]),
           batch['target_title'][i], subjects[i]) for i in range(n)]


def fit_prompts(batch: dict, tok, template, layout: str, specials: dict, max_len: int) -> dict:
  """One `datasets.map` batch: {'input_ids', 'prompt', 'history_shown', 'full_len'} with every prompt
  <= max_len tokens (full_len: the tokens of the prompt with its whole configured history)."""
  rows = rows_of(batch)
  n = len(rows)
  texts = [template.render(*row) for row in rows]
  ids = tokenizer_lib.encode_texts(tok, texts, layout, specials)
  shown = [len(r[1]) for r in rows]
  full = [len(x) for x in ids]
  for i in (i for i in range(n) if len(ids[i]) > max_len):
    texts[i], ids[i], shown[i] = _shorten(rows[i], tok, template, layout, specials, max_len)
  return {'input_ids': ids, 'prompt': texts, 'history_shown': shown, 'full_len': full}


def _shorten(row, tok, template, layout, specials, max_len):
  """(text, ids, history items shown) of the longest version of `row` that fits."""
  profile, titles, ratings, target, subject = row
  # Keep the k most recent history items, for the largest k that fits (one batched tokenizer call).
  candidates = [template.render(profile, titles[len(titles) - k:], ratings[len(ratings) - k:], target, subject)
                for k in range(len(titles) - 1, -1, -1)]
  for k, text, ids in zip(range(len(titles) - 1, -1, -1), candidates,
                          tokenizer_lib.encode_texts(tok, candidates, layout, specials)):
    if len(ids) <= max_len:
      return text, ids, k
  # No history fits: cut the profile to its longest word prefix that fits (binary search).
  words = profile.split()
  lo, hi, best = 0, len(words) - 1, None
  while lo <= hi:
    mid = (lo + hi) // 2
    text = template.render(' '.join(words[:mid]), [], [], target, subject)
    ids = tokenizer_lib.encode_texts(tok, [text], layout, specials)[0]
    if len(ids) <= max_len:
      best, lo = (text, ids, 0), mid + 1
    else:
      hi = mid - 1
  if best is None:
    need = len(tokenizer_lib.encode_texts(tok, [template.render('', [], [], target, subject)], layout, specials)[0])
    raise UserError(f'the target item {target[:60]!r} and the question alone need {need} tokens, more than '
                    f'config.data.max_input_length={max_len}; raise --config.data.max_input_length')
  return best


def encode_frame(frame, tok, template, *, layout: str, specials: dict, max_len: int, cache_file: str,
                 progress: bool, desc: str) -> dict:
  """Tokenises a split's prompt pieces with `datasets.map` (cached at cache_file).

  Returns {'prompt_ids': int32 [N, max_len] right-padded, 'prompt_len': int32 [N],
  'prompt': list[str] (the final text), 'history_shown': int32 [N], 'full_len': int32 [N] (the
  tokens of the prompt with its whole history, before any shortening)}.
  """
  import datasets  # heavy: datasets
  # Seconds of work: a bar on a terminal or in a notebook; in a log it would only add lines.
  (datasets.enable_progress_bars if progress and runtime.interactive() else datasets.disable_progress_bars)()
  features = datasets.Features({'input_ids': datasets.Sequence(datasets.Value('int32')),
                                'prompt': datasets.Value('string'), 'history_shown': datasets.Value('int32'),
                                'full_len': datasets.Value('int32')})
  # The tokenizer is not hashed (slow for big vocabularies): the cache lives in this preparation's own folder.
  fingerprint = hashlib.sha256(repr((desc, len(frame), max_len, layout, template, specials)).encode()).hexdigest()[:16]
  columns = list(COLUMNS) + ([SUBJECT] if SUBJECT in frame else [])
  ds = datasets.Dataset.from_pandas(frame[columns].reset_index(drop=True), preserve_index=False)
  ds = ds.map(fit_prompts, batched=True, batch_size=1000, remove_columns=columns, features=features,
              cache_file_name=cache_file, desc=desc, new_fingerprint=fingerprint,
              fn_kwargs=dict(tok=tok, template=template, layout=layout, specials=specials, max_len=max_len))
  column = ds.data.column('input_ids').combine_chunks()  # pyarrow list<int32>, one row per prompt
  lengths = column.value_lengths().to_numpy().astype(np.int32)
  out = np.full((len(ds), max_len), specials['pad_id'], np.int32)  # [N, max_input_length]
  out[np.arange(max_len)[None, :] < lengths[:, None]] = column.flatten().to_numpy()
  return {'prompt_ids': out, 'prompt_len': lengths, 'prompt': ds.data.column('prompt').to_pylist(),
          'history_shown': ds.data.column('history_shown').to_numpy().astype(np.int32),
          'full_len': ds.data.column('full_len').to_numpy().astype(np.int32)}


def check_budget(shown, available, full_len, *, max_len: int, history_k: int, max_share: float) -> dict:
  """The prompt budget: a UserError when more than `max_share` of the prompts lose history items (or,
  with none to lose, profile words) to fit `max_len` tokens, with the numbers, the max_input_length
  that would fit and the history_k that would. Arrays over every sample: items shown, items
  available (min(history, history_k)), tokens of the prompt with its whole history.
  Returns {'shortened', 'samples', 'share'}."""
  shown, available, full_len = (np.asarray(x) for x in (shown, available, full_len))
  n = len(shown)
  short = int((full_len > max_len).sum())  # did not fit whole: lost history items or, with none, profile words
  out = {'shortened': short, 'samples': n, 'share': round(short / max(n, 1), 4)}
  if n == 0 or short / n <= max_share:
    return out
  fits = int(np.quantile(full_len, 1.0 - max_share, method='higher'))
  k_fits = next((k for k in range(history_k, -1, -1)
                 if (shown < np.minimum(available, k)).sum() / n <= max_share), 0)
  raise UserError(
      f'the prompt budget: history_k={history_k} does not fit config.data.max_input_length={max_len} in {short} '
      f'of {n} prompts ({100 * short / n:.0f}%, above config.data.max_shortened={max_share:g}): they lose history '
      f'items (mean shown {shown.mean():.2f} of {available.mean():.2f}); prompts with their whole history need up '
      f'to {int(full_len.max())} tokens: --config.data.max_input_length={fits} fits all but {max_share:.0%}, or '
      f'--config.data.history_k={k_fits} fits this length')


def length_stats(lengths) -> dict:
  x = np.asarray(lengths)
  if not len(x):
    return {}
  return {'min': int(x.min()), 'mean': round(float(x.mean()), 2), 'p50': float(np.percentile(x, 50)),
          'p95': float(np.percentile(x, 95)), 'max': int(x.max())}
