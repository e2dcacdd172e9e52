"""Token arrays on disk and the batches every jitted step eats (docs/ARCHITECTURE.md, "Data").

`prepare` saves one .npy per array under <workdir>/data/tokens/<split>/; the ids that
describe them (answers, pad, buckets, ...) are in data/manifest.json under "tokens".
Loading needs neither `datasets` nor `transformers`, so training processes start fast.
Batches are padded to a few bucket lengths so a step compiles a handful of times, not per batch.
"""
import dataclasses
import hashlib
import json
import os

import numpy as np

from e2urec_jax import runtime, stamps, storage
from e2urec_jax.data.layouts import ENCODER_DECODER, of_family
from e2urec_jax.errors import UserError

TRAIN_ONLY = ('is_forget', 'sisa_shard', 'receraser_shard')
# {item id: [category, ...]} beside the arrays: the item table's genres as the source spells them, what
# data.forget_unit='category' and `forget --categories` read.
CATEGORIES_FILE = 'item_categories.json'


@dataclasses.dataclass
class SplitArrays:
  prompt_ids: np.ndarray  # int32 [N, max_input_length], right-padded with pad_id
  prompt_len: np.ndarray  # int32 [N]
  label: np.ndarray  # int32 [N], 1 = Yes
  user_id: np.ndarray  # int64 [N]
  item_id: np.ndarray  # int64 [N]
  is_forget: np.ndarray | None = None  # bool [N] (train only)
  sisa_shard: np.ndarray | None = None  # int32 [N] (train only)
  receraser_shard: np.ndarray | None = None  # int32 [N] (train only)

  def __len__(self) -> int:
    return len(self.label)


@dataclasses.dataclass
class TokenizedData:
  """Everything a step needs from the data; the first rows are the contract, the rest are conveniences."""
  layout: str  # 'encoder-decoder' | 'decoder-only' (data/layouts.py): prompt template and batch layout
  splits: dict  # 'train' | 'valid' | 'test' -> SplitArrays
  answers: dict  # {'yes': [int], 'no': [int]}: answer text + end token
  yes_id: int  # first answer token
  no_id: int
  pad_id: int
  decoder_start_id: int
  bucket_lengths: tuple  # allowed padded lengths, ascending; the last fits every prompt + answer
  eos_id: int = 1
  bos_id: int | None = None
  vocab_size: int = 0  # len(tokenizer): the embedding rows a scratch model needs
  max_input_length: int = 0
  forget_users: np.ndarray | None = None  # sorted user ids of the forget set
  digest: str = ''  # sha256 of the token arrays and ids as prepared (phases record it: train/fingerprint.py)
  item_categories: dict | None = None  # {item id: (category, ...)} (data/item_categories.json; None: not recorded)


def save_split(directory: str, arrays: SplitArrays) -> None:
  os.makedirs(directory, exist_ok=True)
  for field in dataclasses.fields(SplitArrays):
    value = getattr(arrays, field.name)
    if value is not None:
      np.save(os.path.join(directory, field.name + '.npy'), value)


REPAIR = 'rerun `run` (or `prepare`) on this workdir: it prepares the data again'


def digest(data_dir: str, manifest: dict) -> str:
  """The prepared data's identity: sha256 over its token arrays' hashes and the ids that describe them."""
  arrays = []
  for root, _, files in os.walk(os.path.join(data_dir, 'tokens')):
    for f in sorted(files):
      if f.endswith('.npy'):
        path = os.path.join(root, f)
        arrays.append((os.path.relpath(path, data_dir), stamps.file_sha256(path)))
  body = json.dumps([sorted(arrays), manifest.get('tokens')], sort_keys=True, default=runtime.json_default)
  return hashlib.sha256(body.encode()).hexdigest()


def load_tokenized(workdir: str) -> TokenizedData:
  """The token arrays and ids `prepare` wrote under <workdir>/data, checked against their stamps."""
  data_dir = os.path.join(workdir, 'data')
  manifest_path = os.path.join(data_dir, 'manifest.json')
  if not storage.exists(manifest_path):
    raise UserError(f'no prepared data in {data_dir}; run `python -m e2urec_jax prepare --workdir={workdir}` first')
  files = ['manifest.json'] + [os.path.join('tokens', s, f.name + '.npy') for s in ('train', 'valid', 'test')
                               for f in dataclasses.fields(SplitArrays)]
  if not storage.is_remote(data_dir):  # (an object store's copy is checked by its markers: storage.py)
    stamps.verify(data_dir, REPAIR, files)
  try:
    manifest = runtime.read_json(manifest_path)
  except ValueError:
    raise stamps.Corrupt(f'{manifest_path} is not readable JSON; {REPAIR}', path=manifest_path, folder=data_dir)
  meta = manifest['tokens']
  tokens_dir = storage.local_copy(os.path.join(data_dir, 'tokens'))  # a gs://... workdir's arrays, downloaded
  splits = {}
  for split in ('train', 'valid', 'test'):
    folder = os.path.join(tokens_dir, split)
    values = {}
    for field in dataclasses.fields(SplitArrays):
      path = os.path.join(folder, field.name + '.npy')
      if os.path.exists(path):
        try:
          values[field.name] = np.load(path)
        except (ValueError, OSError, EOFError) as e:  # no stamp to name it (written before stamps)
          raise stamps.Corrupt(f'{path} is not a readable array ({str(e).splitlines()[0][:80]}); {REPAIR}',
                               path=path, folder=data_dir)
      elif split == 'train' or field.name not in TRAIN_ONLY:
        raise UserError(f'{path} is missing; rerun `prepare` (delete {data_dir} to force it)')
    splits[split] = SplitArrays(**values)
  return TokenizedData(
      layout=meta['layout'] if 'layout' in meta else of_family(meta['family']),  # (older manifests: family)
      splits=splits, answers={k: list(v) for k, v in meta['answers'].items()},
      yes_id=meta['yes_id'], no_id=meta['no_id'], pad_id=meta['pad_id'], decoder_start_id=meta['decoder_start_id'],
      bucket_lengths=tuple(meta['bucket_lengths']), eos_id=meta['eos_id'], bos_id=meta['bos_id'],
      vocab_size=meta['vocab_size'], max_input_length=meta['max_input_length'],
      forget_users=np.asarray(meta['forget_users'], np.int64),
      digest=manifest.get('digest') or digest(data_dir, manifest),
      item_categories=read_categories(data_dir))


def read_categories(data_dir: str) -> dict | None:
  """{item id: (category, ...)} that `prepare` recorded (data/item_categories.json); None for data
  prepared before it recorded them."""
  path = os.path.join(data_dir, CATEGORIES_FILE)
  if not storage.exists(path):
    return None
  return {int(i): tuple(c) for i, c in runtime.read_json(path).items()}


def make_batch(data: TokenizedData, split: str, indices, *, flip: bool = False, length: int | None = None,
               batch_size: int | None = None) -> dict:
  """Host arrays of one batch (docs/ARCHITECTURE.md): rows `indices` of `split`, then padding rows.

  flip: each row gets the other answer (Bad-T). length: pad inputs to exactly this length
  (ValueError if a row needs more) instead of the smallest bucket. batch_size (optional,
  >= len(indices)): rows beyond len(indices) are padding: answer_mask 0, label -1, and one
  attended pad token (never an all-masked row, which would make softmax NaN).
  """
  arrays = data.splits[split]
  idx = np.asarray(indices, np.int64).reshape(-1)
  n = len(idx)
  b = n if batch_size is None else int(batch_size)
  if b < n or b == 0:
    raise ValueError(f'batch_size {batch_size} must be >= len(indices) = {n} and > 0')
  pad, encoder_decoder = data.pad_id, data.layout == ENCODER_DECODER
  yes, no = data.answers['yes'], data.answers['no']
  a = max(len(yes), len(no))
  table = np.full((2, a), pad, np.int32)  # row 0 = No, row 1 = Yes
  table[0, :len(no)], table[1, :len(yes)] = no, yes
  table_len = np.array([len(no), len(yes)], np.int32)

  label = np.full(b, -1, np.int32)  # [B]
  label[:n] = arrays.label[idx]
  choice = label[:n] ^ int(bool(flip))
  answer = np.full((b, a), pad, np.int32)  # [B, A]
  answer[:n] = table[choice]
  answer_len = np.zeros(b, np.int32)
  answer_len[:n] = table_len[choice]
  prompt_len = np.ones(b, np.int32)  # padding rows: one attended pad token
  prompt_len[:n] = arrays.prompt_len[idx]
  total = prompt_len if encoder_decoder else prompt_len + np.maximum(answer_len - 1, 0)  # [B] tokens the input holds

  need = int(total.max())
  if length is None:
    length = next((x for x in data.bucket_lengths if x >= need), -(-need // 8) * 8)
  elif length < need:
    raise ValueError(f'length={length} is shorter than the longest row of this batch ({need} tokens)')
  input_ids = np.full((b, length), pad, np.int32)  # [B, L]
  width = min(length, arrays.prompt_ids.shape[1])
  input_ids[:n, :width] = arrays.prompt_ids[idx, :width]
  attention_mask = (np.arange(length)[None, :] < total[:, None]).astype(np.int32)  # [B, L]
  steps = np.arange(a)[None, :]  # [1, A]
  answer_mask = (steps < answer_len[:, None]).astype(np.float32)  # [B, A]
  batch = {'input_ids': input_ids, 'attention_mask': attention_mask, 'answer_labels': answer,
           'answer_mask': answer_mask, 'label': label}
  if encoder_decoder:
    batch['decoder_input_ids'] = np.concatenate(
        [np.full((b, 1), data.decoder_start_id, np.int32), answer[:, :-1]], axis=1)  # [B, A]
    batch['answer_positions'] = np.broadcast_to(steps, (b, a)).astype(np.int32)
  else:
    # The answer (minus its last token) follows the prompt; the logit at position p predicts token p + 1.
    rows, cols = np.nonzero(steps[:, :a - 1] < (answer_len[:, None] - 1))
    input_ids[rows, prompt_len[rows] + cols] = answer[rows, cols]
    batch['answer_positions'] = np.minimum(prompt_len[:, None] - 1 + steps, length - 1).astype(np.int32)
  return batch
