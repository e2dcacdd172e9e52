"""LoRA as a parameter-tree transform.

The frozen base stays one tree (`params`); the adapters are a second tree that
mirrors the param paths of the targeted dense kernels, with leaves
`lora_a [..., d_in, r]` (random) and `lora_b [..., r, d_out]` (zeros, so a fresh
student is exactly the base). It is handed to the model as the linen variable
collection 'lora': `model.apply({'params': params, 'lora': adapters}, ...)` (or
`forward(..., adapters=adapters)`), and a targeted dense computes
`x @ W + scale * (dropout(x) @ A) @ B`. Only the adapters are differentiated.
Models that differ only in adapters share one base tree: the original is the base with
zero adapters, an augmented LoRA model the base with its own adapters.
"""
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from e2urec_jax import names
from e2urec_jax.errors import UserError
from e2urec_jax.models.layers import COLLECTION, Dropout, Runtime


class Dense(nn.Module):
  """The one place adapters enter the forward: a dense layer (kernel [d_in, d_out],
  optional bias) plus the LoRA update when the 'lora' collection holds one for it."""
  features: int
  rt: Runtime
  use_bias: bool = False
  kernel_init: Callable = nn.initializers.normal(0.02)
  fp32_out: bool = False  # LM heads: accumulate and return fp32 logits

  @nn.compact
  def __call__(self, x):  # [..., d_in] -> [..., features]
    dtype = self.rt.jdtype
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features), self.rt.jparam_dtype)
    x = x.astype(dtype)
    out_type = jnp.float32 if self.fp32_out else None
    y = jnp.dot(x, kernel.astype(dtype), preferred_element_type=out_type)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,), self.rt.jparam_dtype)
      y = y + bias.astype(y.dtype)
    if self.has_variable(COLLECTION, 'lora_a'):
      a = self.get_variable(COLLECTION, 'lora_a')  # [d_in, r]
      b = self.get_variable(COLLECTION, 'lora_b')  # [r, d_out]
      h = Dropout(self.rt.lora_dropout, self.rt.dropout_seeds)(x, deterministic=self.rt.deterministic)
      update = jnp.dot(jnp.dot(h, a.astype(dtype)), b.astype(dtype), preferred_element_type=out_type)
      y = y + (update * self.rt.lora_scale).astype(y.dtype)
    return y


def default_targets(family: str) -> tuple:
  """peft's defaults (names.FAMILIES): T5 'q','v' (self- and cross-attention), Llama 'q_proj','v_proj'."""
  if family not in names.FAMILIES:
    raise UserError(f'no default LoRA targets for model family {family!r}; set lora.targets')
  return names.FAMILIES[family].lora_targets


def parse_targets(spec: str, family: str) -> tuple:
  """config.lora.targets ('q,v' or '' for the family default) -> a tuple of names."""
  listed = tuple(t.strip() for t in (spec or '').split(',') if t.strip())
  return listed or default_targets(family)


def _dense_paths(tree, prefix=()):
  """Paths of every sub-dict holding a 'kernel' leaf (the dense layers)."""
  if not isinstance(tree, dict):
    return []
  found = [prefix] if 'kernel' in tree else []
  for key, sub in tree.items():
    found += _dense_paths(sub, prefix + (key,))
  return found


def _matches(path: tuple, target: str) -> bool:
  parts = tuple(p for p in target.replace('/', '.').split('.') if p)
  return bool(parts) and path[-len(parts):] == parts


def init_adapters(params, rng, r: int, targets: Sequence[str]):
  """Adapters for every dense layer whose module name (or dotted path suffix, e.g.
  'cross_attn.q') is in `targets`. lora_a: kaiming-uniform like peft (bound
  1/sqrt(d_in)); lora_b: zeros. Always fp32, whatever the base's dtype."""
  if isinstance(targets, str):
    targets = (targets,)
  dense = _dense_paths(params)
  paths = [p for p in dense if any(_matches(p, t) for t in targets)]
  if not paths:
    layer_names = sorted({p[-1] for p in dense})
    raise UserError(f'LoRA targets {tuple(targets)} match no dense layer; layer names are {layer_names}')
  adapters = {}
  for key, path in zip(jax.random.split(rng, len(paths)), paths):
    kernel = _get(params, path)['kernel']
    *lead, d_in, d_out = kernel.shape
    bound = 1.0 / math.sqrt(d_in)
    leaf = {'lora_a': jax.random.uniform(key, (*lead, d_in, r), jnp.float32, -bound, bound),
            'lora_b': jnp.zeros((*lead, r, d_out), jnp.float32)}
    _set(adapters, path, leaf)
  return adapters


def merge(params, adapters, scale: float):
  """Folds adapters into the kernels: W + scale * A @ B (in fp32, stored back in W's dtype).
  Used to freeze a LoRA-trained model as a plain one (e.g. the original for E2URec)."""
  out = jax.tree.map(lambda x: x, params)  # fresh containers; leaves shared
  for path in _dense_paths_of_adapters(adapters):
    lo, dense = _get(adapters, path), _get(out, path)
    kernel = dense['kernel']
    update = jnp.matmul(lo['lora_a'].astype(jnp.float32), lo['lora_b'].astype(jnp.float32))
    dense['kernel'] = (kernel.astype(jnp.float32) + scale * update).astype(kernel.dtype)
  return out


def configure(model, *, r: int, alpha: float, dropout: float = 0.0):
  """The model with adapter scale alpha / r and adapter dropout set (a linen clone)."""
  return model.clone(lora_scale=float(alpha) / float(r), lora_dropout=float(dropout))


def count_params(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def trainable_fraction(adapters, params) -> float:
  return count_params(adapters) / max(count_params(params), 1)


def _dense_paths_of_adapters(tree, prefix=()):
  if 'lora_a' in tree:
    return [prefix]
  return [p for k, v in tree.items() for p in _dense_paths_of_adapters(v, prefix + (k,))]


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value
