"""Building blocks shared by the T5 and Llama-family models.

Precision policy, in one place: parameters may be stored in fp32 or bf16 (a frozen
base held in bf16 to fit a large model), matmuls run in the compute dtype, and
norms, softmax and logits are computed in fp32.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = 'lora'  # the linen variable collection that holds the LoRA adapters (models/lora.py)


@dataclasses.dataclass(frozen=True)
class Runtime:
  """Per-call settings every layer needs; frozen so modules stay hashable."""
  dtype: str = 'float32'  # compute dtype of matmuls and of the residual stream
  param_dtype: str = 'float32'  # dtype of parameters created by init
  lora_scale: float = 1.0  # lora_alpha / r
  lora_dropout: float = 0.0  # dropout on the adapter input
  deterministic: bool = True  # False only when a dropout rng is given
  attention: str = 'einsum'  # attention implementation (models/attention.py)
  attention_dropout: float = -1.0  # rate on attention probabilities; < 0 = the architecture's own
  dropout_seeds: str = 'bits'  # how each dropout site seeds its mask hash (Dropout.seeds)

  def attention_dropout_rate(self, arch_rate: float) -> float:
    return arch_rate if self.attention_dropout < 0 else self.attention_dropout

  @property
  def jdtype(self):
    return jnp.dtype(self.dtype)

  @property
  def jparam_dtype(self):
    return jnp.dtype(self.param_dtype)


class LanguageModel(nn.Module):
  """The fields every top-level model (T5, Llama) has; subclasses narrow `arch` and add __call__."""
  arch: Any  # the architecture dataclass (T5Arch, LlamaArch)
  dtype: str = 'float32'  # compute dtype
  param_dtype: str = 'float32'  # dtype of freshly initialised params
  remat: bool = False
  lora_scale: float = 1.0
  lora_dropout: float = 0.0
  hf_config_json: str = ''  # the transformers config this model came from (for save_pretrained)
  # Speed options (config.model's fields of the same names; the defaults are the original paths).
  attention: str = 'einsum'  # 'einsum' | 'xla' | 'cudnn' (models/attention.py)
  attention_dropout: float = -1.0  # dropout on attention probabilities; < 0 = the architecture's rate
  remat_policy: str = 'nothing'  # with remat: what the backward pass keeps (REMAT_POLICIES)
  scan_unroll: int = 0  # layers unrolled per scan iteration; 0 = all on CPU, 1 on accelerators
  dropout_seeds: str = 'bits'  # 'bits' | 'key' (Dropout.seeds)

  def runtime(self, deterministic: bool) -> Runtime:
    return Runtime(self.dtype, self.param_dtype, self.lora_scale, self.lora_dropout, deterministic,
                   self.attention, self.attention_dropout, self.dropout_seeds)

  def scan_options(self) -> dict:
    return dict(remat=self.remat, remat_policy=self.remat_policy, unroll=self.scan_unroll)


class RMSNorm(nn.Module):
  """Scale-only RMS norm (T5LayerNorm and LlamaRMSNorm are the same op), in fp32."""
  eps: float
  rt: Runtime

  @nn.compact
  def __call__(self, x):  # [..., d]
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), self.rt.jparam_dtype)
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps) * scale.astype(jnp.float32)
    return y.astype(self.rt.jdtype)


class Embed(nn.Module):
  """Token embedding; looks rows up before casting, so a bf16/fp32 mismatch costs nothing."""
  num_embeddings: int
  features: int
  init_std: float
  rt: Runtime

  def setup(self):
    self.embedding = self.param('embedding', nn.initializers.normal(self.init_std),
                                (self.num_embeddings, self.features), self.rt.jparam_dtype)

  def __call__(self, ids):  # [batch, length] -> [batch, length, features]
    return jnp.take(self.embedding, ids, axis=0).astype(self.rt.jdtype)

  def attend(self, h):  # tied LM head: [batch, length, features] -> fp32 [batch, length, vocab]
    emb = self.embedding.astype(self.rt.jdtype)
    return jnp.einsum('bld,vd->blv', h.astype(self.rt.jdtype), emb,
                      preferred_element_type=jnp.float32)


def _mix32(h):
  """murmur3's 32-bit finaliser: a bijection whose output bits each depend on every input bit."""
  h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


class Dropout(nn.Module):
  """Inverted dropout whose mask is a counter-based hash of each element's index under two
  32-bit seeds drawn from the 'dropout' rng (Philox-style, with fewer rounds).

  Why not nn.Dropout: drawing one random word per element dominated a training step on CPU
  (T5's attention-probability dropout alone draws batch x heads x length^2 per layer; 30% of
  the tiny E2URec step). The hash fuses into the select, so no random tensor is materialised.
  Keep probability 1 - round(rate * 2^32) / 2^32; masks of different seeds are uncorrelated.

  `seeds`: 'bits' draws the two seed words from the site's key (RngBitGenerator, which XLA
  expands into a Philox block per site: ~30% of a T5 E2URec step's HLO instructions); 'key'
  takes the first two words of the site's key itself, already a threefry hash output (the same
  statistics, another random stream, a third fewer instructions to compile)."""
  rate: float
  seeds: str = 'bits'

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate <= 0:
      return x
    if self.rate >= 1:
      return jnp.zeros_like(x)
    if x.size >= 2 ** 32:
      raise ValueError(f'dropout over {x.size} elements: the element index must fit 32 bits')
    key = self.make_rng('dropout')
    if self.seeds == 'key':
      seed = jax.random.key_data(key).reshape(-1)[:2].astype(jnp.uint32)
    else:
      seed = jax.random.bits(key, (2,), jnp.uint32)
    index = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)
    keep = _mix32(_mix32(index ^ seed[0]) ^ seed[1]) >= jnp.uint32(round(self.rate * 2 ** 32))
    return jnp.where(keep, x * jnp.asarray(1 / (1 - self.rate), x.dtype), jnp.zeros((), x.dtype))


def dropout_fn(module: nn.Module, rate: float, rt: Runtime):
  """A dropout callable for attention.attention, or None when dropout is off (then the fused path runs)."""
  if rt.deterministic or not rate:
    return None
  return lambda x: Dropout(rate, rt.dropout_seeds, parent=module)(x, deterministic=False)


# What a rematerialised layer keeps for the backward pass ('nothing': recompute the whole layer).
REMAT_POLICIES = {
    'nothing': None,
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # projection/MLP outputs, not attention
    'dots_all': jax.checkpoint_policies.dots_saveable,  # every matmul output, attention scores included
}


def scan_layers(block_cls, num_layers: int, remat: bool, remat_policy: str = 'nothing', unroll: int = 0,
                **kwargs):
  """One layer module scanned `num_layers` times: params (and adapters) get a leading
  layer axis, and the layer body is traced and compiled once instead of per layer.
  `unroll` 0: on CPU the scan is unrolled (XLA:CPU runs an unrolled stack ~10% faster, no
  loop-carried copies, and compiles it quickly); on accelerators the rolled loop keeps deep
  models' compile short. With `remat` each layer is recomputed in the backward pass, keeping
  what `remat_policy` names (the recomputed dropout masks are the same: they hash the seed)."""
  if remat:
    if remat_policy not in REMAT_POLICIES:
      raise ValueError(f'remat_policy {remat_policy!r}: one of {", ".join(REMAT_POLICIES)}')
    block_cls = nn.remat(block_cls, prevent_cse=False, policy=REMAT_POLICIES[remat_policy])
  if unroll <= 0:
    unroll = num_layers if jax.default_backend() == 'cpu' else 1
  scanned = nn.scan(block_cls,
                    variable_axes={'params': 0, COLLECTION: 0},
                    split_rngs={'params': True, 'dropout': True},
                    in_axes=nn.broadcast, length=num_layers, unroll=min(unroll, num_layers))
  return scanned(**kwargs)


def gather_positions(h, positions):
  """[batch, length, d] at [batch, answers] -> [batch, answers, d]; before the LM head,
  so a decoder-only model never builds [batch, length, vocab]."""
  return jnp.take_along_axis(h, positions[..., None].astype(jnp.int32), axis=1)


def activation(name: str):
  fns = {'relu': jax.nn.relu, 'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),
         'gelu_pytorch_tanh': lambda x: jax.nn.gelu(x, approximate=True),
         'gelu': lambda x: jax.nn.gelu(x, approximate=False), 'silu': jax.nn.silu, 'swish': jax.nn.silu}
  return fns[name]


SUPPORTED_ACTIVATIONS = ('relu', 'gelu_new', 'gelu_pytorch_tanh', 'gelu', 'silu', 'swish')
