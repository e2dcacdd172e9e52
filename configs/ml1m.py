"""MovieLens-1M with T5-base: the paper's main setting (an accelerator is expected).

  python -m e2urec_jax run --config=configs/ml1m.py --workdir=~/runs/ml1m
(on a TPU VM: tpu/launch.sh with SYNC_TO=gs://bucket/runs/ml1m mirrors the workdir to a bucket)
"""
from e2urec_jax.config import default_config


def get_config(arg: str = ''):
  c = default_config()
  c.data.source = 'ml-1m'  # ratings.dat / users.dat / movies.dat ('::', latin-1).
  c.model.name_or_path = 't5-base'
  c.model.dtype = 'bfloat16'  # bf16 compute on GPU/TPU; params and losses stay fp32.
  c.eval.batch_size = 256
  if arg:
    raise ValueError(f'configs/ml1m.py: unknown variant {arg!r}')
  return c
