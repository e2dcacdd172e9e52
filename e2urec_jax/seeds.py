"""Every seed of a training phase comes from `derive(seed, method, phase)`, and only from here.

`seed` is the experiment's seed (config.seed, or a sweep/repeat seed), `method` the model or
method being trained ('pretrained', 'original', 'retrain', 'retrain_seed2', 'augmented',
'e2urec', 'sisa/shard2', ...; a sweep row such as 'e2urec[alpha=4]' uses its method's name, so
the rows of a sweep see the same batches and initial adapters), and `phase` what the
randomness drives inside it:

  'init'            initial adapters (LoRA training) or weights (a scratch model)
  'batches'         the order of the samples of a one-set phase
  'retain_batches'  the retain-set order of a two-set (retain + forget) phase
  'forget_batches'  the forget-set order of a two-set phase
  'dropout'         the phase's dropout key
  'attention'       RecEraser's aggregation weights and their training samples
  'samples'         which samples a measurement draws (the relearning check's, eval/relearn.py)

The value is a hash of the three, so streams never collide (the offsets this replaced gave
the noise-floor retrain the seed of every forget-set order, and SISA's shard k RecEraser's),
and a new method or phase needs no offset of its own. The data protocol (forget users,
shards, the synthetic generator) is part of the data set, not of training: it keeps its own
streams of config.seed (data/protocol.py).
"""
import hashlib

PHASES = ('init', 'batches', 'retain_batches', 'forget_batches', 'dropout', 'attention', 'samples')


def derive(seed: int, method: str, phase: str) -> int:
  """The seed of `phase` of `method` in the experiment seeded with `seed`: 31 bits of
  sha256(seed, method, phase), a valid seed for numpy and jax.random.key alike."""
  if phase not in PHASES:
    raise ValueError(f'unknown seed phase {phase!r}; one of {", ".join(PHASES)}')
  digest = hashlib.sha256(f'{int(seed)}\x00{method}\x00{phase}'.encode()).digest()
  return int.from_bytes(digest[:4], 'little') & 0x7FFFFFFF
