"""MovieLens-100K under the paper's protocol.

  python -m e2urec_jax run --config=configs/ml100k.py --config.data.raw_dir=PATH --workdir=runs/ml100k
Default: T5-base from the hub (config.model.name_or_path), as in the paper, and the original
code's recipe (`config.paper_recipe`: its forget-user and shard draws and prompt, a
full-parameter augmented model, batch 32, weight decay 0.01, early stopping after 3 epochs
without improvement, no clipping). The paper has no ML-100K experiment: this is its setting on
the smaller MovieLens (docs/PAPER.md).
Variant `:cpu`: a small T5 trained from scratch on 30,000 of the samples, prompts without
history, three seeds of the whole experiment (original, retrain, noise floor, E2URec, NegGrad,
Bad-T) on 2 CPU cores, about 18 minutes a seed.
"""
from e2urec_jax.config import default_config, paper_proportions, paper_recipe


def get_config(arg: str = ''):
  c = default_config()
  c.data.source = 'ml-100k'  # u.data / u.user / u.item; downloaded from GroupLens if raw_dir is ''.
  c.data.num_samples = 100_000  # ML-100K has ~95k samples with >= 5 history items: all are kept.
  c.model.name_or_path = 't5-base'  # The paper's backbone.
  if not arg:
    paper_recipe(c)
  if arg == 'cpu':  # this project's recipe and protocol ('default'), scaled to CPU minutes
    # What unlearning needs is an original that learned something about the forget users that a
    # model trained without them does not know. Measured on seed 42 (docs/UNLEARNING.md):
    # - with 3 history items and early stopping (this variant until now) the original sat at the
    #   noise floor (JSD (true) 0.0084 vs 0.0074): the time-ordered split puts 92% of the valid
    #   samples on users the train split never saw, so the best valid loss comes after one epoch,
    #   before anything user-specific is learned; trained 4 epochs regardless, it was no more
    #   confident on the forget users than retrain (mean memorised log-odds -0.01);
    # - without history the profile line is what tells users apart, and the model learns each
    #   user's taste from it: 0.20 log-odds memorised at the best valid check (epoch 4 of 5),
    #   0.45 after 8 epochs, where the original is 1.9x the noise floor from retrain (1.7x over
    #   seeds 42-44; forget AUC 0.76 against retrain's 0.64). Retraining then takes ~5 min on 2
    #   cores, so E2URec's fixed costs are small beside it (0.16 of retraining's whole cost).
    c.data.num_samples = 30_000
    c.data.history_k = 0  # No history: the profile carries the user (prompts of 48-64 tokens).
    c.data.max_input_length = 64  # 0.1% of prompts (very long titles) lose profile words.
    c.data.bucket_lengths = (64,)
    c.model.name_or_path = ''
    c.model.tokenizer = 'train'
    c.model.tokenizer_vocab_size = 3000
    c.model.scratch.d_model = 64
    c.model.scratch.num_layers = 2
    c.model.scratch.num_heads = 4
    c.model.scratch.d_kv = 16
    c.model.scratch.d_ff = 256
    c.model.dropout = 0.0
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.epochs = 8
    c.train.eval_every = 1_000_000  # One check, at the end: the last model (early stopping would keep epoch ~4).
    c.augment.mode = 'full'
    c.augment.batch_size = 32
    c.augment.steps = 200  # ~2 passes over the forget set.
    c.augment.learning_rate = 5e-4
    paper_proportions(c, 400)  # NegGrad 1200, Bad-T 960, GA 120, NPO 400 steps at lr 1e-4.
    c.unlearn.receraser.attention_steps = 100
    c.eval.batch_size = 64
    c.seeds = '42,43,44'
    c.unlearn.methods = 'e2urec,neggrad,badt'  # SISA and RecEraser retrain 4 shards each: add them by name.
  elif arg:
    raise ValueError(f'configs/ml100k.py: unknown variant {arg!r}; use :cpu or nothing')
  return c
