"""Every seed of a training phase comes from `derive(seed, method, phase)`, and only from here.

`seed` is the experiment's seed (config.seed, or a sweep/repeat seed), `method` the model or
method being trained ('pretrained', 'original', 'retrain', 'retrain_seed2', a method's name or
one of its helper models', 'sisa/shard2', ...; a sweep row such as 'e2urec[alpha=4]' uses its
method's name, so the rows of a sweep see the same batches and initial adapters), and `phase`
what the randomness drives inside it. The phases every runner draws (PHASES):

  'init'            initial adapters (LoRA training) or weights (a scratch model)
  'batches'         the order of the samples of a one-set phase
  'retain_batches'  the retain-set order of a two-set (retain + forget) phase
  'forget_batches'  the forget-set order of a two-set phase
  'dropout'         the phase's dropout key

A method names any other phase it draws in its own module (RecEraser's 'attention': its
aggregation weights and their training samples): nothing is registered here.

The value is a hash of the three, so streams never collide (the offsets this replaced gave
the noise-floor retrain the seed of every forget-set order, and SISA's shard k RecEraser's),
and a new method or phase needs no offset of its own and no edit of this module. The data
protocol (forget users, shards, the synthetic generator) is part of the data set, not of
training: it keeps its own streams of config.seed (data/protocol.py), which predate this module;
only the draw added since, inside the forget users ('forget_draw' of method 'data': which of
their train samples data.forget_unit 'interactions' or 'category' deletes), comes from here.
"""
import hashlib

PHASES = ('init', 'batches', 'retain_batches', 'forget_batches', 'dropout')


def derive(seed: int, method: str, phase: str) -> int:
  """The seed of `phase` of `method` in the experiment seeded with `seed`: 31 bits of
  sha256(seed, method, phase), a valid seed for numpy and jax.random.key alike. Any phase name
  gets its own stream (a misspelt one too, so a module names its phases once, as constants)."""
  if not isinstance(phase, str) or not phase:
    raise ValueError(f'seed phase {phase!r}: a non-empty name (e.g. one of {", ".join(PHASES)})')
  digest = hashlib.sha256(f'{int(seed)}\x00{method}\x00{phase}'.encode()).digest()
  return int.from_bytes(digest[:4], 'little') & 0x7FFFFFFF
