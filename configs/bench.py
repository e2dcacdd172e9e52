"""The benchmark: time our E2URec step, training step and evaluation on random inputs.

  python -m e2urec_jax bench --config=configs/bench.py:size=tiny --workdir=runs/bench
  python -m e2urec_jax bench --config=configs/bench.py:size=base,batch=64 --workdir=runs/bench

Sizes: tiny (T5, d_model 128, 2+2 layers, T5's real 32,128-token vocabulary), small (t5-small),
base (t5-base), llama135m (SmolLM2-135M shape). Weights are random: speed does not depend on
them. Any field of `bench` below can be set the same way, and `dropout`, `remat` and the speed
options `attention`, `attention_dropout`, `remat_policy`, `scan_unroll`, `dropout_seeds` set the model's
(remat=true lets the 30-layer Llama train at batch 64 on one GPU).
"""
import ml_collections

from e2urec_jax.config import default_config


def get_config(arg: str = ''):
  c = default_config()
  b = c.bench = ml_collections.ConfigDict()
  b.size = 'tiny'  # tiny | small | base | llama135m
  b.batch = 16  # Retain and forget samples per E2URec step, each (the paper's batch 16).
  b.seq = 256  # Input tokens per sample (prompt length; the answer adds 3).
  b.steps = 10  # Timed steps (after warm-up and compilation).
  b.warmup = 2  # Untimed steps after compilation.
  b.dtype = 'auto'  # Compute dtype: 'auto' = bfloat16 on GPU/TPU, float32 on CPU.
  b.reference = True  # Also run benchmarks/torch_reference.py (if torch and peft are installed).
  b.reference_steps = 5  # Timed steps of the PyTorch reference.
  b.vocab = 0  # > 0 overrides the vocabulary size (tests).
  b.what = 'e2urec_step,train_step,eval'  # Which of our measurements to run ('+' between, on the command line).
  b.profile = ''  # A folder: also trace 3 E2URec steps there and print where device time goes.
  c.model.dropout = 0.1  # Training-mode dropout as the original runs (T5 dropout_rate 0.1).
  model_options = {k: c.model for k in ('dropout', 'remat', 'attention', 'attention_dropout', 'remat_policy',
                                        'scan_unroll', 'dropout_seeds')}  # Model fields the bench may override.
  for item in filter(None, arg.split(',')):
    key, _, value = item.partition('=')
    section = model_options.get(key, b)
    if key not in section:
      raise ValueError(f'configs/bench.py: unknown option {key!r}; one of {", ".join([*b, *model_options])}')
    kind = type(section[key])
    section[key] = kind(value) if kind is not bool else value.lower() in ('1', 'true', 'yes')
  return c
