"""GoodReads (UCSD Book Graph genre subset) with T5-base, the paper's second data set.

  python -m e2urec_jax run --config=configs/goodreads.py:poetry --config.data.raw_dir=PATH --workdir=DIR
The variant names the genre subset (default poetry).

The original code's recipe (`config.paper_recipe`): its forget-user and shard draws
(data.protocol 'paper'), a full-parameter augmented model, batch 32, weight decay 0.01, early
stopping after 3 epochs without improvement, no clipping. The original code publishes no
GoodReads preprocessing: the subset, the sample protocol's use of it and the prompt (the
paper's ML-1M prompt with books: 'The user read the following books in order ...', no profile,
no pronoun) are this project's (docs/PAPER.md).
"""
from e2urec_jax.config import default_config, paper_recipe


def get_config(arg: str = ''):
  c = default_config()
  c.data.source = 'goodreads'
  c.data.goodreads_genre = arg or 'poetry'  # goodreads_interactions_<genre>.json.gz
  c.data.label_threshold = 3.0  # 1-5 stars; 0 (not rated) rows are dropped.
  c.model.name_or_path = 't5-base'
  c.model.dtype = 'bfloat16'
  paper_recipe(c)
  return c
