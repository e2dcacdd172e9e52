"""config.data.source -> RawData: the one place that knows which reader serves which source."""
import os

from e2urec_jax.data import goodreads, movielens, synthetic, tabular
from e2urec_jax.data.sources import RawData
from e2urec_jax.errors import UserError

SOURCES = ('synthetic', 'ml-100k', 'ml-1m', 'goodreads', 'csv')


def read_source(config, scratch_dir: str) -> RawData:
  """Reads (or generates, downloads) the configured data set.

  scratch_dir: a folder inside the preparation's temporary output, where the synthetic
  generator writes its MovieLens-format files (they end up in <workdir>/data/synthetic).
  """
  d = config.data
  paper = d.get('protocol', 'default') == 'paper'  # MovieLens profiles in the original code's wording
  if d.source == 'synthetic':
    folder = os.path.join(scratch_dir, 'synthetic')
    synthetic.generate(d.synthetic, int(d.synthetic.seed), folder)  # the world, not the experiment's seed
    return movielens.read_ml100k(folder, name='synthetic', pinned={}, paper=paper)
  if d.source in ('ml-100k', 'ml-1m'):
    folder, ours = movielens.locate(d.source, d.raw_dir, d.download_dir)
    if d.source == 'ml-100k':
      return movielens.read_ml100k(folder, strict=ours, paper=paper)
    return movielens.read_ml1m(folder, paper=paper)
  if d.source == 'goodreads':
    return goodreads.read_goodreads(d.raw_dir, d.goodreads_genre, progress=bool(config.progress))
  if d.source == 'csv':
    return tabular.read_tabular(d.csv, d.raw_dir)
  raise UserError(f'config.data.source={d.source!r}: use one of {", ".join(SOURCES)}')
