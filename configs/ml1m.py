"""MovieLens-1M with T5-base: the paper's main setting, as its original code runs it (an accelerator is expected).

  python -m e2urec_jax run --config=configs/ml1m.py --workdir=~/runs/ml1m
(on a TPU VM: tpu/launch.sh with SYNC_TO=gs://bucket/runs/ml1m mirrors the workdir to a bucket)

`config.paper_recipe`: the original code's forget users, shards and prompt (data.protocol
'paper'), a full-parameter augmented model, batch 32, AdamW weight decay 0.01, early stopping
after 3 epochs without a better valid loss (at most 100 epochs), no gradient clipping. The
unlearning methods keep the paper's settings (config.unlearn defaults). What still differs from
the paper's code (padding mask, bf16, fixed step counts, ...) is in docs/PAPER.md.
"""
from e2urec_jax.config import default_config, paper_recipe


def get_config(arg: str = ''):
  c = default_config()
  c.data.source = 'ml-1m'  # ratings.dat / users.dat / movies.dat ('::', latin-1).
  c.model.name_or_path = 't5-base'
  c.model.dtype = 'bfloat16'  # bf16 compute on GPU/TPU; params and losses stay fp32 (the original: fp32).
  paper_recipe(c)
  c.eval.batch_size = 256
  if arg:
    raise ValueError(f'configs/ml1m.py: unknown variant {arg!r}')
  return c
