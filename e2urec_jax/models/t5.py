"""T5 (v1.0: relu, tied head rescaled by d_model**-0.5; v1.1/Flan: gated-gelu, own lm_head).

Matches transformers' T5ForConditionalGeneration: RMS layer norms, no 1/sqrt(d)
attention scaling, a relative position bias computed once per stack (bidirectional
buckets in the encoder, causal in the decoder) and shared by its layers, cross
attention without position bias. Layers are scanned (params [layers, ...]).

Param tree (tied v1.0 has no lm_head):
  shared/embedding [vocab, d_model]
  encoder/relative_attention_bias/embedding [buckets, heads]
  encoder/layers/self_attn/{q,k,v,o}/kernel [layers, d_in, d_out]
  encoder/layers/{self_attn_norm,mlp_norm}/scale [layers, d_model]
  encoder/layers/mlp/{wi | wi_0,wi_1}/kernel, encoder/layers/mlp/wo/kernel
  encoder/final_norm/scale
  decoder/... as encoder, plus decoder/layers/cross_attn/{q,k,v,o}, decoder/layers/cross_attn_norm
  lm_head/kernel [d_model, vocab]
"""
import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from e2urec_jax import names
from e2urec_jax.errors import UserError
from e2urec_jax.models.attention import attention
from e2urec_jax.models.families import Family
from e2urec_jax.models.layers import (Dropout, Embed, LanguageModel, RMSNorm, Runtime, SUPPORTED_ACTIVATIONS,
                                      activation, dropout_fn, gather_positions, scan_layers)
from e2urec_jax.models.lora import Dense


@dataclasses.dataclass(frozen=True)
class T5Arch:
  """The architecture numbers of a transformers T5Config (hashable, so models are)."""
  vocab_size: int
  d_model: int
  d_kv: int
  d_ff: int
  num_layers: int
  num_decoder_layers: int
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  dropout_rate: float = 0.1
  eps: float = 1e-6
  act: str = 'relu'
  gated: bool = False
  tied: bool = True  # lm head = shared embedding (no lm_head param)
  scale_decoder_outputs: bool = True  # v1.0: decoder output * d_model**-0.5 before the head
  init_factor: float = 1.0

  @classmethod
  def from_hf(cls, c, tied=None):
    """`tied=None`: v1.0-style configs (that scale decoder outputs) tie, v1.1 ones do not;
    loading passes whether the checkpoint has its own lm_head."""
    if c.dense_act_fn not in SUPPORTED_ACTIVATIONS:
      raise UserError(f'T5 activation {c.dense_act_fn!r} is not supported (supported: {SUPPORTED_ACTIVATIONS})')
    scale = getattr(c, 'scale_decoder_outputs', None)
    if scale is None:
      scale = getattr(c, 'tie_word_embeddings', True) is not False
    return cls(vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff,
               num_layers=c.num_layers, num_decoder_layers=c.num_decoder_layers or c.num_layers,
               num_heads=c.num_heads, num_buckets=c.relative_attention_num_buckets,
               max_distance=c.relative_attention_max_distance, dropout_rate=float(c.dropout_rate),
               eps=c.layer_norm_epsilon, act=c.dense_act_fn, gated=bool(c.is_gated_act),
               tied=bool(scale) if tied is None else bool(tied), scale_decoder_outputs=bool(scale),
               init_factor=float(c.initializer_factor))


def relative_position_buckets(q_len, k_len, bidirectional, num_buckets, max_distance):
  """transformers' T5Attention._relative_position_bucket, in numpy float32 at trace time
  (a constant of the compiled program; checked equal to torch's over +-600)."""
  rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]  # [q_len, k_len] memory - context
  buckets = np.zeros_like(rel)
  if bidirectional:
    num_buckets //= 2
    buckets += (rel > 0).astype(rel.dtype) * num_buckets
    rel = np.abs(rel)
  else:
    rel = -np.minimum(rel, 0)
  max_exact = num_buckets // 2
  with np.errstate(divide='ignore', invalid='ignore'):
    large = np.log(rel.astype(np.float32) / np.float32(max_exact))
    large = large / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
  large = max_exact + np.where(rel < max_exact, 0, large).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return (buckets + np.where(rel < max_exact, rel, large)).astype(np.int32)


class T5Attention(nn.Module):
  arch: T5Arch
  rt: Runtime
  causal: bool = False

  @nn.compact
  def __call__(self, x, kv, bias, key_mask):  # x [batch, q_len, d_model], kv [batch, kv_len, d_model]
    a, f = self.arch, self.arch.init_factor
    inner = a.num_heads * a.d_kv
    dense = lambda name, std: Dense(inner, self.rt, kernel_init=nn.initializers.normal(std), name=name)
    q = dense('q', f * (a.d_model * a.d_kv) ** -0.5)(x)
    k = dense('k', f * a.d_model ** -0.5)(kv)
    v = dense('v', f * a.d_model ** -0.5)(kv)
    split = lambda t: t.reshape(*t.shape[:2], a.num_heads, a.d_kv)  # [batch, len, heads, d_kv]
    out = attention(split(q), split(k), split(v), bias=bias, key_mask=key_mask, causal=self.causal, scale=1.0,
                    dropout=dropout_fn(self, self.rt.attention_dropout_rate(a.dropout_rate), self.rt),
                    implementation=self.rt.attention)
    out = out.reshape(*out.shape[:2], inner)  # [batch, q_len, heads * d_kv]
    return Dense(a.d_model, self.rt, kernel_init=nn.initializers.normal(f * inner ** -0.5), name='o')(out)


class T5MLP(nn.Module):
  arch: T5Arch
  rt: Runtime

  @nn.compact
  def __call__(self, x):  # [batch, len, d_model]
    a, f = self.arch, self.arch.init_factor
    wi_init = nn.initializers.normal(f * a.d_model ** -0.5)
    act = activation(a.act)
    if a.gated:
      h = act(Dense(a.d_ff, self.rt, kernel_init=wi_init, name='wi_0')(x))
      h = h * Dense(a.d_ff, self.rt, kernel_init=wi_init, name='wi_1')(x)
    else:
      h = act(Dense(a.d_ff, self.rt, kernel_init=wi_init, name='wi')(x))  # [batch, len, d_ff]
    h = Dropout(a.dropout_rate, self.rt.dropout_seeds)(h, deterministic=self.rt.deterministic)
    return Dense(a.d_model, self.rt, kernel_init=nn.initializers.normal(f * a.d_ff ** -0.5), name='wo')(h)


class T5Block(nn.Module):
  """One encoder or decoder layer; the scan carry is the residual stream."""
  arch: T5Arch
  rt: Runtime
  decoder: bool

  @nn.compact
  def __call__(self, h, bias, key_mask, enc, enc_key_mask):  # h [batch, len, d_model]; masks bool [batch, len]
    a, rt = self.arch, self.rt
    drop = lambda x: Dropout(a.dropout_rate, rt.dropout_seeds)(x, deterministic=rt.deterministic)
    n = RMSNorm(a.eps, rt, name='self_attn_norm')(h)
    h = h + drop(T5Attention(a, rt, causal=self.decoder, name='self_attn')(n, n, bias, key_mask))
    if self.decoder:
      n = RMSNorm(a.eps, rt, name='cross_attn_norm')(h)
      h = h + drop(T5Attention(a, rt, name='cross_attn')(n, enc, None, enc_key_mask))
    n = RMSNorm(a.eps, rt, name='mlp_norm')(h)
    h = h + drop(T5MLP(a, rt, name='mlp')(n))
    return h, None


class T5Stack(nn.Module):
  """Embedded tokens -> final hidden states. The position bias is computed here, once per
  stack and forward, and broadcast to every layer of the scan."""
  arch: T5Arch
  rt: Runtime
  decoder: bool
  scan_options: tuple = ()  # (key, value) pairs for scan_layers (remat, remat_policy, unroll)

  @nn.compact
  def __call__(self, h, key_mask, enc=None, enc_key_mask=None):  # h [batch, len, d_model] embedded tokens
    a, rt = self.arch, self.rt
    drop = lambda x: Dropout(a.dropout_rate, rt.dropout_seeds)(x, deterministic=rt.deterministic)
    length = h.shape[1]
    buckets = relative_position_buckets(length, length, not self.decoder, a.num_buckets, a.max_distance)
    table = Embed(a.num_buckets, a.num_heads, a.init_factor * a.d_model ** -0.5,
                  rt, name='relative_attention_bias')
    # A one-hot matmul rather than a gather: the gather's gradient is a scatter-add over
    # len * len entries, which on CPU cost more than the rest of the backward pass.
    onehot = jax.nn.one_hot(jnp.asarray(buckets), a.num_buckets, dtype=jnp.float32)  # [len, len, buckets]
    bias = jnp.einsum('qkb,bh->hqk', onehot, table.embedding.astype(jnp.float32))[None]  # [1, heads, len, len]
    layers = a.num_decoder_layers if self.decoder else a.num_layers
    stack = scan_layers(T5Block, layers, **dict(self.scan_options), arch=a, rt=rt, decoder=self.decoder,
                        name='layers')
    h, _ = stack(drop(h), bias, key_mask, enc, enc_key_mask)
    return drop(RMSNorm(a.eps, rt, name='final_norm')(h))


class T5(LanguageModel):
  """Encoder-decoder LM. __call__ -> fp32 logits [batch, dec_len or answers, vocab]."""
  family: ClassVar[str] = 't5'
  arch: T5Arch

  @nn.compact
  def __call__(self, input_ids, attention_mask, decoder_input_ids=None, answer_positions=None,
               deterministic=True):
    if decoder_input_ids is None:
      raise ValueError('T5 needs decoder_input_ids (decoder_start + answer[:-1])')
    a = self.arch
    rt = self.runtime(deterministic)
    shared = Embed(a.vocab_size, a.d_model, a.init_factor, rt, name='shared')
    enc_key_mask = attention_mask.astype(bool)  # [batch, src_len]; the decoder is causal, unpadded
    scan = tuple(self.scan_options().items())
    enc = T5Stack(a, rt, False, scan, name='encoder')(shared(input_ids), enc_key_mask)
    h = T5Stack(a, rt, True, scan, name='decoder')(shared(decoder_input_ids), None, enc, enc_key_mask)
    if answer_positions is not None:
      h = gather_positions(h, answer_positions)  # [batch, answers, d_model]
    if a.scale_decoder_outputs:
      h = h * (a.d_model ** -0.5)
    if a.tied:
      return shared.attend(h)
    return Dense(a.vocab_size, rt, kernel_init=nn.initializers.normal(a.init_factor), fp32_out=True,
                 name='lm_head')(h)


# ------------------------------------------------------------------ the family record
# Our sub-layer names -> the HF module inside a T5 block.
_HF_ENCODER = {'self_attn': 'layer.0.SelfAttention', 'self_attn_norm': 'layer.0.layer_norm',
               'mlp': 'layer.1.DenseReluDense', 'mlp_norm': 'layer.1.layer_norm'}
_HF_DECODER = {'self_attn': 'layer.0.SelfAttention', 'self_attn_norm': 'layer.0.layer_norm',
               'cross_attn': 'layer.1.EncDecAttention', 'cross_attn_norm': 'layer.1.layer_norm',
               'mlp': 'layer.2.DenseReluDense', 'mlp_norm': 'layer.2.layer_norm'}


def hf_name(path: tuple) -> str:
  """HF tensor name of a param leaf; per-layer leaves contain '{i}' for the layer index."""
  *modules, leaf = path
  suffix = 'bias' if leaf == 'bias' else 'weight'
  if modules[0] in ('encoder', 'decoder'):
    stack, rest = modules[0], modules[1:]
    if rest[0] == 'relative_attention_bias':
      return f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'
    if rest[0] == 'final_norm':
      return f'{stack}.final_layer_norm.weight'
    table = _HF_DECODER if stack == 'decoder' else _HF_ENCODER
    return '.'.join([f'{stack}.block.{{i}}', table[rest[1]], *rest[2:], suffix])
  return '.'.join([*modules, suffix])  # shared.weight, lm_head.weight


def scratch_hf_config(s, vocab_size, pad_id, eos_id, bos_id, dropout):
  """A transformers T5Config for config.model.scratch `s` (v1.1's gated MLPs get their own head)."""
  import transformers  # heavy: transformers loads torch
  gated = s.feed_forward_proj.startswith('gated')
  return transformers.T5Config(
      vocab_size=int(vocab_size), d_model=s.d_model, d_kv=s.d_kv, d_ff=s.d_ff, num_layers=s.num_layers,
      num_decoder_layers=s.num_layers, num_heads=s.num_heads, feed_forward_proj=s.feed_forward_proj,
      dropout_rate=float(dropout), pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=bos_id,
      decoder_start_token_id=pad_id, tie_word_embeddings=not gated)


def tied_from_store(store) -> bool:
  """v1.1 has its own head; a checkpoint without one (or with an equal copy) is tied."""
  return 'lm_head.weight' not in store or np.array_equal(store.get('lm_head.weight'), store.get('shared.weight'))


def forward_flops(a: T5Arch, input_length: int, decoder_length: int, head_positions=None) -> int:
  s, t, d, inner = input_length, decoder_length, a.d_model, a.num_heads * a.d_kv
  mlp = 2 * d * a.d_ff * (3 if a.gated else 2)
  enc = a.num_layers * (s * (8 * d * inner + mlp) + 4 * s * s * inner)
  dec = a.num_decoder_layers * (t * (8 * d * inner + 4 * d * inner + mlp) + s * 4 * d * inner
                                + 4 * t * t * inner + 4 * t * s * inner)
  head = 2 * d * a.vocab_size * (t if head_positions is None else head_positions)
  return int(enc + dec + head)


FAMILY = Family(
    names=names.FAMILIES['t5'],
    build=lambda hf_config, tied, **kwargs: T5(T5Arch.from_hf(hf_config, tied=tied), **kwargs),
    hf_name=hf_name,
    layer_counts=lambda a: {'encoder': a.num_layers, 'decoder': a.num_decoder_layers},
    scratch_hf_config=scratch_hf_config,
    forward_flops=forward_flops,
    tied_from_store=tied_from_store,
    saved_config=lambda a: {'scale_decoder_outputs': a.scale_decoder_outputs},
)
