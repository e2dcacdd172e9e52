"""MovieLens-100K under the paper's protocol.

  python -m e2urec_jax run --config=configs/ml100k.py --config.data.raw_dir=PATH --workdir=runs/ml100k
Default: T5-base from the hub (config.model.name_or_path), as in the paper.
Variant `:cpu`: a small T5 trained from scratch on 12,000 of the samples with every phase
shortened, so the whole experiment runs on 2 CPU cores in well under 45 minutes.
"""
from e2urec_jax.config import default_config


def get_config(arg: str = ''):
  c = default_config()
  c.data.source = 'ml-100k'  # u.data / u.user / u.item; downloaded from GroupLens if raw_dir is ''.
  c.data.num_samples = 100_000  # ML-100K has ~95k samples with >= 5 history items: all are kept.
  c.model.name_or_path = 't5-base'  # The paper's backbone.
  if arg == 'cpu':
    c.data.num_samples = 12_000
    c.data.history_k = 5
    c.data.max_input_length = 160
    c.data.bucket_lengths = (160,)
    c.model.name_or_path = ''
    c.model.tokenizer = 'train'
    c.model.tokenizer_vocab_size = 3000
    c.model.scratch.d_model = 128
    c.model.scratch.num_layers = 2
    c.model.scratch.num_heads = 4
    c.model.scratch.d_kv = 32
    c.model.scratch.d_ff = 512
    c.model.dropout = 0.0
    c.train.learning_rate = 1e-3
    c.train.epochs = 3
    c.augment.steps = 200
    c.augment.learning_rate = 5e-4
    c.unlearn.e2urec.steps = 400
    for name in ('neggrad', 'badt', 'npo'):
      c.unlearn[name].steps = 400
      c.unlearn[name].learning_rate = 1e-4
    c.unlearn.ga.steps = 100
    c.unlearn.ga.learning_rate = 1e-4
  elif arg:
    raise ValueError(f'configs/ml100k.py: unknown variant {arg!r}; use :cpu or nothing')
  return c
