"""The embedded default: synthetic MovieLens-style data, a tiny T5 trained from scratch, CPU, minutes.

  python -m e2urec_jax run --config=configs/demo.py --workdir=runs/demo
Variant `:test` shrinks it further for the end-to-end tests.
"""
from e2urec_jax.config import default_config, shrink


def get_config(arg: str = ''):
  c = default_config()
  c.data.source = 'synthetic'  # Generated on the fly: nothing to download.
  c.data.num_samples = 6000  # Last N samples kept (the generator makes a few more).
  c.data.history_k = 5  # Shorter prompts keep the demo fast; the protocol is unchanged.
  c.data.max_input_length = 128
  c.data.bucket_lengths = (128,)  # One bucket: one compile per step function.
  c.model.tokenizer = 'train'  # A word-level tokenizer trained on the prompts.
  c.model.tokenizer_vocab_size = 1000
  c.model.scratch.d_model = 64
  c.model.scratch.num_layers = 2
  c.model.scratch.num_heads = 4
  c.model.scratch.d_kv = 16
  c.model.scratch.d_ff = 256
  c.model.dropout = 0.0  # Tiny model, few steps: dropout only slows learning.
  c.train.learning_rate = 2e-3  # From scratch, not fine-tuning: a higher rate.
  c.train.epochs = 3
  c.train.patience = 2
  c.augment.steps = 100
  c.augment.learning_rate = 1e-3
  c.unlearn.e2urec.steps = 200
  c.unlearn.neggrad.steps = 200
  c.unlearn.neggrad.learning_rate = 2e-4
  c.unlearn.badt.steps = 200
  c.unlearn.badt.learning_rate = 2e-4
  c.unlearn.ga.steps = 50
  c.unlearn.ga.learning_rate = 2e-4
  c.unlearn.npo.steps = 200
  c.unlearn.npo.learning_rate = 2e-4
  c.unlearn.receraser.attention_steps = 50
  c.checkpoint.every_steps = 200
  if arg == 'test':  # The end-to-end tests: same story, fewer samples and steps.
    c.data.num_samples = 2000
    shrink(c, steps=60, batch=16)
    c.train.epochs = 2
    c.train.max_steps = 0
  elif arg:
    raise ValueError(f'configs/demo.py: unknown variant {arg!r}; use :test or nothing')
  return c
