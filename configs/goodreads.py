"""GoodReads (UCSD Book Graph genre subset) with T5-base.

  python -m e2urec_jax run --config=configs/goodreads.py:poetry --config.data.raw_dir=PATH --workdir=DIR
The variant names the genre subset (default poetry).
"""
from e2urec_jax.config import default_config


def get_config(arg: str = ''):
  c = default_config()
  c.data.source = 'goodreads'
  c.data.goodreads_genre = arg or 'poetry'  # goodreads_interactions_<genre>.json.gz
  c.data.label_threshold = 3.0  # 1-5 stars; 0 (not rated) rows are dropped.
  c.model.name_or_path = 't5-base'
  c.model.dtype = 'bfloat16'
  return c
