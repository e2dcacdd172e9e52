"""`PhasePlan`: one training phase, declared (what it trains, from what, with which steps and batches).

Methods build one (methods/runner.py, methods/llmrec.py, ...); train/loop.py runs it and
train/runner.py publishes its model and records its stats.
"""
import dataclasses
from typing import Any, Callable


@dataclasses.dataclass
class PhasePlan:
  """One training phase, declared.

  kind 'full': `start` is trained as it is (`frozen` holds what else the loss reads);
  kind 'lora': adapters (`trainable`) are trained on the base in `frozen['base']`.
  save: 'full' (the trained weights), 'merged' (base + adapters folded, as full weights),
  'adapters' (the adapters alone, naming `base_dir` as their base) or 'none'.
  """
  name: str  # phase name: its folders, its model
  kind: str  # 'full' | 'lora'
  step: Any  # a compiled train step (RunContext.train_step)
  start: Any  # host params the phase starts from (the base of the adapters for 'lora')
  trainable: Any  # the initial trainable tree: `start` itself ('full') or fresh adapters ('lora')
  frozen: dict
  batch_for_step: Callable[[int], dict]
  hparams_for_step: Callable[[int], dict]
  num_steps: int
  examples_per_step: int
  base_dir: str  # the model folder `start` came from: checkpoints and adapters record its hash
  seed: int  # the dropout key's seed
  save: str
  validate: Callable[[Any], float] | None = None  # trainable -> valid loss (early stopping)
  eval_every: int = 0
  patience: int = 0
  valid_key: str = 'valid_loss'  # what `validate` measures, as metrics.jsonl names it
  # unlearn_time_s counts the loop up to the kept model's check (the paper's early stopping drops
  # the epochs after it) or, False, up to the stop (a retrain-free rule needs those steps to know).
  time_to_best: bool = True
  prior: dict = dataclasses.field(default_factory=dict)  # {name: stats} of models trained for this one
  extra: dict = dataclasses.field(default_factory=dict)  # more stats to record (a method's settings)
