"""Llama-family decoders (Llama 2/3, SmolLM2, Qwen2): RoPE (default, linear, llama3
scaling), grouped-query attention, RMSNorm, SwiGLU, optional q/k/v (and o, mlp) bias,
tied or untied LM head. Matches transformers' LlamaForCausalLM / Qwen2ForCausalLM on
right-padded batches (positions 0..L-1, causal + key padding mask).

Param tree:
  embed_tokens/embedding [vocab, hidden]
  layers/self_attn/{q_proj,k_proj,v_proj,o_proj}/kernel [layers, d_in, d_out] (+ bias [layers, d_out])
  layers/mlp/{gate_proj,up_proj,down_proj}/kernel
  layers/{input_layernorm,post_attention_layernorm}/scale [layers, hidden]
  norm/scale [hidden]
  lm_head/kernel [hidden, vocab] (absent when tied)
"""
import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from e2urec_jax import names
from e2urec_jax.errors import UserError
from e2urec_jax.models.attention import attention
from e2urec_jax.models.families import Family
from e2urec_jax.models.layers import (Embed, LanguageModel, RMSNorm, Runtime, SUPPORTED_ACTIVATIONS, activation,
                                      dropout_fn, gather_positions, scan_layers)
from e2urec_jax.models.lora import Dense

SUPPORTED_ROPE = ('default', 'linear', 'llama3')


@dataclasses.dataclass(frozen=True)
class LlamaArch:
  """The architecture numbers of a transformers Llama/Qwen2 config (hashable)."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope: tuple = (('rope_theta', 10000.0), ('rope_type', 'default'))  # sorted (key, value) pairs
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  act: str = 'silu'
  tied: bool = False
  attention_dropout: float = 0.0
  initializer_range: float = 0.02

  @classmethod
  def from_hf(cls, c):
    rope = dict(getattr(c, 'rope_parameters', None) or getattr(c, 'rope_scaling', None) or {})
    rope.setdefault('rope_theta', getattr(c, 'rope_theta', 10000.0))
    rope['rope_type'] = rope.get('rope_type', rope.get('type', 'default'))
    rope.pop('type', None)
    if rope['rope_type'] not in SUPPORTED_ROPE:
      raise UserError(f"rope type {rope['rope_type']!r} is not supported (supported: {SUPPORTED_ROPE})")
    if rope.get('partial_rotary_factor', 1.0) != 1.0:
      raise UserError('partial_rotary_factor != 1 is not supported')
    if getattr(c, 'use_sliding_window', False):
      raise UserError('sliding-window attention (use_sliding_window=true) is not supported')
    if c.hidden_act not in SUPPORTED_ACTIVATIONS:
      raise UserError(f'activation {c.hidden_act!r} is not supported (supported: {SUPPORTED_ACTIVATIONS})')
    qwen2 = c.model_type == 'qwen2'
    bias = bool(getattr(c, 'attention_bias', False))
    heads = c.num_attention_heads
    return cls(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
               num_layers=c.num_hidden_layers, num_heads=heads,
               num_kv_heads=getattr(c, 'num_key_value_heads', None) or heads,
               head_dim=getattr(c, 'head_dim', None) or c.hidden_size // heads,
               rms_norm_eps=c.rms_norm_eps, rope=tuple(sorted(rope.items())),
               qkv_bias=qwen2 or bias, o_bias=bias and not qwen2,
               mlp_bias=bool(getattr(c, 'mlp_bias', False)), act=c.hidden_act,
               tied=bool(getattr(c, 'tie_word_embeddings', False)),
               attention_dropout=float(getattr(c, 'attention_dropout', 0.0) or 0.0),
               initializer_range=float(getattr(c, 'initializer_range', 0.02)))


def rope_inv_freq(arch: LlamaArch) -> np.ndarray:
  """Inverse frequencies [head_dim / 2] as transformers computes them (float32)."""
  p = dict(arch.rope)
  dim = arch.head_dim
  inv = (1.0 / (np.float32(p['rope_theta']) ** (np.arange(0, dim, 2).astype(np.float32) / dim)))
  inv = inv.astype(np.float32)
  if p['rope_type'] == 'linear':
    inv = inv / np.float32(p['factor'])
  elif p['rope_type'] == 'llama3':
    factor, low, high = p['factor'], p['low_freq_factor'], p['high_freq_factor']
    old_len = p['original_max_position_embeddings']
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = (2 * math.pi / inv).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv / np.float32(factor), inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    inv = np.where(medium, smoothed, scaled)
  return inv.astype(np.float32)


def rope_tables(arch: LlamaArch, length: int):
  """cos, sin [length, head_dim] in fp32 for positions 0..length-1 (right padding)."""
  inv = jnp.asarray(rope_inv_freq(arch))
  freqs = jnp.arange(length, dtype=jnp.float32)[:, None] * inv[None, :]  # [length, head_dim / 2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)  # [length, head_dim]
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x, cos, sin):  # x [batch, length, heads, head_dim]
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos[None, :, None] + rotated * sin[None, :, None]).astype(x.dtype)


class LlamaAttention(nn.Module):
  arch: LlamaArch
  rt: Runtime

  @nn.compact
  def __call__(self, x, cos, sin, key_mask):  # x [batch, length, hidden], key_mask bool [batch, length]
    a, rt = self.arch, self.rt
    init = nn.initializers.normal(a.initializer_range)
    dense = lambda n, name, bias: Dense(n, rt, use_bias=bias, kernel_init=init, name=name)
    q = dense(a.num_heads * a.head_dim, 'q_proj', a.qkv_bias)(x)
    k = dense(a.num_kv_heads * a.head_dim, 'k_proj', a.qkv_bias)(x)
    v = dense(a.num_kv_heads * a.head_dim, 'v_proj', a.qkv_bias)(x)
    b, length = x.shape[:2]
    q = apply_rope(q.reshape(b, length, a.num_heads, a.head_dim), cos, sin)
    k = apply_rope(k.reshape(b, length, a.num_kv_heads, a.head_dim), cos, sin)
    v = v.reshape(b, length, a.num_kv_heads, a.head_dim)
    out = attention(q, k, v, key_mask=key_mask, causal=True, scale=a.head_dim ** -0.5,
                    dropout=dropout_fn(self, rt.attention_dropout_rate(a.attention_dropout), rt),
                    implementation=rt.attention)  # [batch, length, heads, head_dim]
    return dense(a.hidden_size, 'o_proj', a.o_bias)(out.reshape(b, length, a.num_heads * a.head_dim))


class LlamaMLP(nn.Module):
  arch: LlamaArch
  rt: Runtime

  @nn.compact
  def __call__(self, x):  # [batch, length, hidden]
    a = self.arch
    dense = lambda n, name: Dense(n, self.rt, use_bias=a.mlp_bias,
                                  kernel_init=nn.initializers.normal(a.initializer_range), name=name)
    h = activation(a.act)(dense(a.intermediate_size, 'gate_proj')(x)) * dense(a.intermediate_size, 'up_proj')(x)
    return dense(a.hidden_size, 'down_proj')(h)


class LlamaBlock(nn.Module):
  arch: LlamaArch
  rt: Runtime

  @nn.compact
  def __call__(self, h, cos, sin, key_mask):  # h [batch, length, hidden]
    a, rt = self.arch, self.rt
    h = h + LlamaAttention(a, rt, name='self_attn')(RMSNorm(a.rms_norm_eps, rt, name='input_layernorm')(h),
                                                      cos, sin, key_mask)
    h = h + LlamaMLP(a, rt, name='mlp')(RMSNorm(a.rms_norm_eps, rt, name='post_attention_layernorm')(h))
    return h, None


class Llama(LanguageModel):
  """Decoder-only LM. __call__ -> fp32 logits [batch, length or answers, vocab]."""
  family: ClassVar[str] = 'llama'
  arch: LlamaArch

  @nn.compact
  def __call__(self, input_ids, attention_mask, decoder_input_ids=None, answer_positions=None,
               deterministic=True):
    if decoder_input_ids is not None:
      raise ValueError('a decoder-only model takes no decoder_input_ids')
    a = self.arch
    rt = self.runtime(deterministic)
    embed = Embed(a.vocab_size, a.hidden_size, a.initializer_range, rt, name='embed_tokens')
    cos, sin = rope_tables(a, input_ids.shape[1])
    stack = scan_layers(LlamaBlock, a.num_layers, **self.scan_options(), arch=a, rt=rt, name='layers')
    h, _ = stack(embed(input_ids), cos, sin, attention_mask.astype(bool))  # causal + key padding
    h = RMSNorm(a.rms_norm_eps, rt, name='norm')(h)
    if answer_positions is not None:
      h = gather_positions(h, answer_positions)  # [batch, answers, hidden]
    if a.tied:
      return embed.attend(h)
    return Dense(a.vocab_size, rt, kernel_init=nn.initializers.normal(a.initializer_range), fp32_out=True,
                 name='lm_head')(h)


# ------------------------------------------------------------------ the family record
def hf_name(path: tuple) -> str:
  """HF tensor name of a param leaf; per-layer leaves contain '{i}' for the layer index."""
  *modules, leaf = path
  suffix = 'bias' if leaf == 'bias' else 'weight'
  if modules[0] == 'lm_head':
    return 'lm_head.weight'
  if modules[0] == 'layers':
    return '.'.join(['model.layers.{i}', *modules[1:], suffix])
  return '.'.join(['model', *modules, suffix])  # model.embed_tokens.weight, model.norm.weight


def scratch_hf_config(s, vocab_size, pad_id, eos_id, bos_id, dropout):
  """A transformers LlamaConfig for config.model.scratch `s` (tied head, head_dim = d_model / num_heads)."""
  problem = names.scratch_problem(s)
  if problem:
    raise UserError(f'model.scratch: {problem}')
  import transformers  # heavy: transformers loads torch
  return transformers.LlamaConfig(
      vocab_size=int(vocab_size), hidden_size=s.d_model, intermediate_size=s.d_ff,
      num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
      head_dim=s.d_model // s.num_heads, max_position_embeddings=4096, rms_norm_eps=1e-6,
      pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=True,
      attention_dropout=float(dropout))


def forward_flops(a: LlamaArch, input_length: int, decoder_length: int = 0, head_positions=None) -> int:
  s, d, hd = input_length, a.hidden_size, a.head_dim
  proj = 2 * d * hd * (2 * a.num_heads + 2 * a.num_kv_heads)
  per_layer = s * (proj + 6 * d * a.intermediate_size) + 4 * s * s * a.num_heads * hd
  head = 2 * d * a.vocab_size * (s if head_positions is None else head_positions)
  return int(a.num_layers * per_layer + head)


FAMILY = Family(
    names=names.FAMILIES['llama'],
    build=lambda hf_config, tied, **kwargs: Llama(LlamaArch.from_hf(hf_config), **kwargs),
    hf_name=hf_name,
    layer_counts=lambda a: {'layers': a.num_layers},
    scratch_hf_config=scratch_hf_config,
    forward_flops=forward_flops,
)
