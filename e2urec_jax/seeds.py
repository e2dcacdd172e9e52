"""Every seed of a training phase comes from `derive(seed, method, phase)`, and only from here.

`seed` is the experiment's seed (config.seed, or a sweep/repeat seed), `method` the model or
method being trained ('original', 'retrain', 'retrain_seed2', 'augmented', 'e2urec',
'sisa/shard2', ...; a sweep row such as 'e2urec[alpha=4]' uses its method's name, so the
rows of a sweep see the same batches and initial adapters), and `phase` what the randomness
drives inside it:

  'init'            initial adapters (LoRA training) or weights (a scratch model)
  'batches'         the order of the samples of a one-set phase
  'retain_batches'  the retain-set order of a two-set (retain + forget) phase
  'forget_batches'  the forget-set order of a two-set phase
  'dropout'         the phase's dropout key
  'attention'       RecEraser's aggregation weights and their training samples

The data protocol (forget users, shards, the synthetic generator) is part of the data set,
not of training: it keeps its own streams of config.seed (data/protocol.py).
"""

PHASES = ('init', 'batches', 'retain_batches', 'forget_batches', 'dropout', 'attention')


def derive(seed: int, method: str, phase: str) -> int:
  """The seed of `phase` of `method` in the experiment seeded with `seed`.

  These are the offsets the code used before seeds were derived in one place; they collide
  (retrain_seed2 and every forget-set order are both seed + 1, shard k of SISA and RecEraser
  share seed + 10 + k), which is why a hash of (seed, method, phase) replaces them.
  """
  if phase not in PHASES:
    raise ValueError(f'unknown seed phase {phase!r}; one of {", ".join(PHASES)}')
  seed = int(seed)
  if method == 'retrain_seed2':
    return seed + 1
  if method == 'augmented':
    return seed + 2
  if '/shard' in method:
    return seed + 10 + int(method.rpartition('/shard')[2])
  if phase == 'forget_batches':
    return seed + 1
  if phase == 'init' and method not in ('pretrained', 'original', 'retrain'):
    return seed + 3
  return seed
