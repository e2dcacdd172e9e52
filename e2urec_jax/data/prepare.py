"""`prepare`: raw files -> samples -> prompts -> token arrays, written under <workdir>/data.

Everything is built in a temporary folder and renamed into place at the end
(runtime.atomic_dir), so an error leaves no half-written data for a later command to
trust. A second call with the same data and tokenizer settings returns at once (resume);
other settings (training, unlearning) never invalidate the data.
"""
import contextlib
import hashlib
import json
import os
import time

import numpy as np
import pandas as pd

from e2urec_jax import runtime, stamps, storage
from e2urec_jax.data import encode, protocol, readers, tokenizer as tokenizer_lib
from e2urec_jax.data.layouts import ENCODER_DECODER
from e2urec_jax.data.prompts import NO, Template, YES, template_for
from e2urec_jax.data.tokens import CATEGORIES_FILE, SplitArrays, digest, save_split

FORMAT_VERSION = 1  # Bump when the written layout changes: older workdirs are then prepared again.
STAMP_EXCLUDE = ('hf_cache',)  # a cache `prepare` needs no more: not part of the data's stamp


def tokens_digest(data_dir: str, manifest: dict) -> str:
  return digest(data_dir, manifest)


# config.data fields added after prepared data recorded its settings, with the value that prepares
# what was prepared before them: a manifest without the field matches that value.
FIELDS_ADDED_LATER = {'protocol': 'default', 'forget_selection': 'random', 'profile_zip': False, 'users': 'all',
                      'heldout_fraction': 0.3, 'forget_unit': 'user', 'forget_interaction_share': 0.5}



def config_key(config) -> dict:
  """The settings the prepared data depends on (compared on resume, stored in the manifest)."""
  m = config.model
  data = config.data.to_dict()
  for field, before in FIELDS_ADDED_LATER.items():  # data prepared before the field existed stays valid
    if data.get(field) == before:
      del data[field]
  key = {'format': FORMAT_VERSION, 'seed': int(config.seed), 'data': data,
         'model': {'name_or_path': m.name_or_path, 'tokenizer': m.tokenizer,
                   'tokenizer_vocab_size': int(m.tokenizer_vocab_size),
                   'family': '' if m.name_or_path else m.scratch.family}}
  return json.loads(json.dumps(key))  # tuples -> lists, as the manifest stores them


def prepared_manifest(config, workdir: str):
  """The manifest of data already prepared with these settings (and its tokenizer intact), else None."""
  path = os.path.join(workdir, 'data', 'manifest.json')
  if not storage.exists(path):
    return None
  manifest = runtime.read_json(path)
  if manifest.get('config') != config_key(config):
    return None
  want = manifest.get('tokenizer_sha256')
  if want and _tokenizer_sha256(os.path.join(workdir, 'tokenizer')) != want:
    return None
  return manifest


def prepare(config, workdir: str) -> dict:
  """Writes <workdir>/data (splits, tokens, manifest.json), <workdir>/tokenizer if trained, config.json."""
  start = time.time()
  workdir = runtime.ensure_writable_dir(storage.abspath(os.path.expanduser(workdir)))
  manifest = prepared_manifest(config, workdir)
  if manifest is not None:
    print(f'data already prepared in {workdir}/data with these settings; delete that folder to prepare again')
    runtime.save_config(workdir, config)
    return manifest
  trained = config.model.tokenizer == 'train'
  tokenizer_dir = runtime.atomic_dir(os.path.join(workdir, 'tokenizer')) if trained else contextlib.nullcontext()
  # Data is renamed into place first, the tokenizer right after: a crash between the two
  # leaves a manifest whose tokenizer hash does not match, which the next call redoes.
  with tokenizer_dir as tok_tmp:
    with runtime.atomic_dir(os.path.join(workdir, 'data')) as tmp:
      manifest = _build(config, workdir, tmp, tok_tmp)
      manifest['elapsed_s'] = round(time.time() - start, 2)
      manifest['digest'] = tokens_digest(tmp, manifest)
      runtime.write_json(os.path.join(tmp, 'manifest.json'), manifest)
      stamps.write(tmp, exclude=STAMP_EXCLUDE)
  runtime.save_config(workdir, config)
  _print_summary(manifest, workdir)
  return manifest


def _build(config, workdir: str, out: str, tok_out: str | None) -> dict:
  d, progress = config.data, bool(config.progress)
  layout, decoder_start = tokenizer_lib.resolve_layout(config.model)
  raw = readers.read_source(config, out)
  categories = protocol.item_categories(raw.items)
  runtime.write_json(os.path.join(out, CATEGORIES_FILE), {str(i): list(c) for i, c in categories.items()})
  splits = protocol.apply_protocol(raw.ratings, d, int(config.seed), categories)
  template = template_for(protocol.protocol_of(d), layout, raw)
  frames = {name: _with_text(df, raw) for name, df in splits.samples.items()}

  if tok_out is not None:
    texts = (template.render(*row) for f in frames.values()
             for row in zip(f['profile'], f['history_titles'], f['history_ratings'], f['target_title'], f['subject']))
    tok = tokenizer_lib.train_tokenizer(_with_answers(texts, layout), config.model.tokenizer_vocab_size,
                                        layout, progress)
    tok.save_pretrained(tok_out)
  else:
    tok = tokenizer_lib.load_tokenizer(config.model, workdir)
  specials = tokenizer_lib.special_ids(tok, layout, decoder_start)
  first = frames['train'].iloc[0]
  sample_prompt = template.render(first['profile'], first['history_titles'], first['history_ratings'],
                                  first['target_title'], first['subject'])
  answers = tokenizer_lib.answer_ids(tok, layout, specials, sample_prompt, YES, NO)

  max_len = int(d.max_input_length)
  stats, shown_stats, budget = {}, {}, {'shown': [], 'available': [], 'full_len': []}
  for name, frame in frames.items():
    enc = encode.encode_frame(frame, tok, template, layout=layout, specials=specials, max_len=max_len,
                              cache_file=os.path.join(out, 'hf_cache', f'{name}.arrow'), progress=progress,
                              desc=f'tokenising {name}')
    stats[name] = encode.length_stats(enc['prompt_len'])
    available = np.minimum(frame['history_len'].to_numpy(), int(d.history_k))
    shown_stats[name] = {'mean': round(float(enc['history_shown'].mean()), 3),
                         'truncated': int((enc['history_shown'] < available).sum()),
                         # no history left to drop (history_k 0 or none shown): profile words went instead
                         'profile_cut': int(((enc['history_shown'] >= available)
                                             & (enc['full_len'] > max_len)).sum())}
    for key, value in (('shown', enc['history_shown']), ('available', available), ('full_len', enc['full_len'])):
      budget[key].append(value)
    _write_split(out, name, frame, enc, template)
  prompt_budget = encode.check_budget(
      *(np.concatenate(budget[k]) for k in ('shown', 'available', 'full_len')), max_len=max_len,
      history_k=int(d.history_k), max_share=float(d.max_shortened))
  all_lengths = np.concatenate([np.load(os.path.join(out, 'tokens', s, 'prompt_len.npy')) for s in frames])
  stats['all'] = encode.length_stats(all_lengths)

  answer_len = max(len(v) for v in answers['answers'].values())
  longest = max_len if layout == ENCODER_DECODER else max_len + answer_len - 1
  buckets = sorted({int(x) for x in d.bucket_lengths})
  if not buckets or buckets[-1] < longest:  # every batch must fit some bucket
    buckets.append(-(-longest // 8) * 8)
    print(f'note: added bucket length {buckets[-1]} (prompt + answer tokens can reach {longest}; '
          f'config.data.bucket_lengths tops out at {tuple(d.bucket_lengths)[-1:]})')

  train = frames['train']
  forget = train['is_forget'].to_numpy()
  subsets = {'train': train, 'valid': frames['valid'], 'test': frames['test'], 'forget': train[forget],
             'retain': train[~forget]}
  user_keys = raw.users.set_index('user')['key']
  return {
      'source': raw.name,
      'counts': {k: int(len(v)) for k, v in subsets.items()},
      'users': {k: int(v['user'].nunique()) for k, v in subsets.items()},
      'forget_users': [int(u) for u in splits.forget_users],
      'forget_unit': protocol.unit_of(d),
      'forget_user_keys': [str(k) for k in user_keys.loc[splits.forget_users]],
      'label_positive_rate': {k: round(float(v['label'].mean()), 4) for k, v in subsets.items()},
      'time_range': {k: [int(frames[k]['timestamp'].min()), int(frames[k]['timestamp'].max())] for k in frames},
      'shards': protocol.shard_counts(train, int(d.num_shards)),
      'raw': {'ratings': int(len(raw.ratings)), 'users': int(raw.ratings['user'].nunique()),
              'items': int(raw.ratings['item'].nunique())},
      'config': config_key(config),
      'source_sha256': raw.source_sha256,
      'token_lengths': stats,
      'history_shown': shown_stats,
      'prompt_budget': {**prompt_budget, 'max_shortened': float(d.max_shortened)},
      'tokenizer_sha256': _tokenizer_sha256(tok_out) if tok_out else None,
      'layout': layout,
      'yes_id': answers['yes_id'], 'no_id': answers['no_id'],
      'tokens': {'layout': layout, **answers, **specials, 'bucket_lengths': buckets, 'vocab_size': len(tok),
                 'max_input_length': max_len, 'forget_users': [int(u) for u in splits.forget_users]},
      'example_prompt': sample_prompt,
  }


def _with_text(samples: pd.DataFrame, raw) -> pd.DataFrame:
  """Adds the prompt pieces (profile, history titles, target title, subject) and the source's own ids."""
  items = raw.items.set_index('item')
  users = raw.users.set_index('user')
  titles = items['title']
  out = samples.copy()
  out['target_title'] = titles.loc[out['item']].to_numpy()
  out['item_key'] = items['key'].loc[out['item']].to_numpy().astype(str)
  out['profile'] = users['profile'].loc[out['user']].to_numpy()
  out['subject'] = users['subject'].loc[out['user']].to_numpy() if 'subject' in users else ''  # the paper's pronoun
  out['user_key'] = users['key'].loc[out['user']].to_numpy().astype(str)
  lookup = dict(zip(titles.index.to_numpy(), titles.to_numpy()))
  out['history_titles'] = [[lookup[i] for i in h] for h in out['history_items']]
  return out


def _with_answers(texts, layout: str):
  """The prompts, then the answers as the model reads them (so they are whole tokens)."""
  yield from texts
  for _ in range(50):
    yield f'{YES} {NO}' if layout == ENCODER_DECODER else f'Answer: {YES} Answer: {NO}'


def _write_split(out: str, name: str, frame: pd.DataFrame, enc: dict, template: Template) -> None:
  table = frame.drop(columns=['profile', 'history_titles', 'subject']).rename(columns={'target_title': 'title'})
  table['prompt'] = enc['prompt']
  table['answer'] = [template.answer(y) for y in table['label']]
  table['prompt_len'] = enc['prompt_len']
  table['history_shown'] = enc['history_shown']
  table.to_parquet(os.path.join(out, f'{name}.parquet'), index=False)
  is_train = name == 'train'
  save_split(os.path.join(out, 'tokens', name), SplitArrays(
      prompt_ids=enc['prompt_ids'], prompt_len=enc['prompt_len'],
      label=frame['label'].to_numpy().astype(np.int32),
      user_id=frame['user'].to_numpy().astype(np.int64), item_id=frame['item'].to_numpy().astype(np.int64),
      is_forget=frame['is_forget'].to_numpy().astype(bool) if is_train else None,
      sisa_shard=frame['sisa_shard'].to_numpy().astype(np.int32) if is_train else None,
      receraser_shard=frame['receraser_shard'].to_numpy().astype(np.int32) if is_train else None))


def _tokenizer_sha256(folder: str) -> str | None:
  path = os.path.join(folder, 'tokenizer.json')
  if storage.is_remote(path):
    return hashlib.sha256(storage.read_bytes(path)).hexdigest() if storage.exists(path) else None
  return stamps.file_sha256(path) if os.path.exists(path) else None


def _print_summary(m: dict, workdir: str) -> None:
  c, s = m['counts'], m['token_lengths']['all']
  truncated = sum(v['truncated'] for v in m['history_shown'].values())
  profile_cut = sum(v.get('profile_cut', 0) for v in m['history_shown'].values())
  cut = f', profile cut in {profile_cut}' if profile_cut else ''
  print(f"prepared {m['source']}: train {c['train']} / valid {c['valid']} / test {c['test']} samples; "
        f"forget {c['forget']} samples of {len(m['forget_users'])} users"
        + (f" ({m['forget_unit']}: their other samples stay)" if m.get('forget_unit', 'user') != 'user' else '')
        + f", retain {c['retain']}")
  print(f"prompt tokens min/mean/p50/p95/max: {s['min']}/{s['mean']}/{s['p50']:g}/{s['p95']:g}/{s['max']} "
        f"(max_input_length {m['tokens']['max_input_length']}; history shortened in {truncated} prompts{cut}); "
        f"positive rate train {m['label_positive_rate']['train']:.3f}")
  print(f"layout {m['layout']}, yes/no ids {m['yes_id']}/{m['no_id']}, vocab {m['tokens']['vocab_size']}, "
        f"bucket lengths {tuple(m['tokens']['bucket_lengths'])}; "
        f"wrote {workdir}/data in {m['elapsed_s']:.1f} s")
