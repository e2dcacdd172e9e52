"""Multi-head attention behind one switch (`model.attention`), for T5 and the Llama family.

  'einsum'  the original path: logits, softmax and attention-probability dropout in fp32 on
            materialised [batch, heads, q_len, kv_len] tensors (without attention dropout it is
            `jax.nn.dot_product_attention`'s XLA implementation: the same arithmetic).
  'xla'     `jax.nn.dot_product_attention(implementation='xla')` when attention dropout is off;
            with it on, the probabilities are materialised in the compute dtype (bf16 on
            accelerators) and dropped there, softmax statistics in fp32, and only those
            compute-dtype probabilities are kept for the backward pass.
  'cudnn'   as 'xla', but cuDNN's fused flash-attention kernel for each call it supports on a
            GPU (`cudnn_supported`); other calls, and other platforms, run 'xla'.

Why attention dropout decides the path: the fused kernels take no per-step random masks
(`jax.nn.dot_product_attention` has no dropout argument, and cuDNN's own dropout takes a seed
fixed at compile time), so dropping probabilities means materialising them. Many T5
fine-tuning recipes run attention dropout 0; `model.attention_dropout=0` does that while
keeping the other dropout sites (residual, feed-forward, adapter input) at `model.dropout`.

Masks come as a key mask (bool [batch, kv_len], True = attend) plus a static `causal` flag
rather than a dense [batch, 1, q_len, kv_len] mask: the XLA paths build the dense mask (any
padding), the cuDNN path turns the key mask into key lengths (cuDNN's padding mask), which
assumes right padding, as every batch of this project has (data/tokens.py).
"""
import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from e2urec_jax import names

IMPLEMENTATIONS = names.ATTENTION_IMPLEMENTATIONS  # config.model.attention's values
CUDNN_MIN_LENGTH = 16  # shorter attentions (T5's 3-token decoder) stay on XLA: a fused kernel gains nothing there


def dense_mask(key_mask, causal: bool, q_len: int, kv_len: int):
  """bool mask broadcastable to [batch, 1, q_len, kv_len] (True = attend), or None."""
  mask = None if key_mask is None else key_mask.astype(bool)[:, None, None, :]  # [batch, 1, 1, kv_len]
  if causal:
    tril = jnp.tril(jnp.ones((q_len, kv_len), bool))[None, None]  # [1, 1, q_len, kv_len]
    mask = tril if mask is None else mask & tril
  return mask


def cudnn_supported(q, k, bias) -> bool:
  """Whether cuDNN's fused attention takes this call (jax's own checks, plus our length floor):
  a GPU backend, fp16/bf16 inputs, head dim a multiple of 8 and <= 128, with a bias (training)
  even sequence lengths, and both lengths >= CUDNN_MIN_LENGTH."""
  t, s, head_dim = q.shape[1], k.shape[1], q.shape[-1]
  if jax.default_backend() != 'gpu' or q.dtype not in (jnp.bfloat16, jnp.float16):
    return False
  if head_dim % 8 or head_dim > 128 or min(t, s) < CUDNN_MIN_LENGTH:
    return False
  return bias is None or (t % 2 == 0 and s % 2 == 0)


def fused_attention(q, k, v, *, bias, key_mask, causal: bool, scale: float, implementation: str):
  """`jax.nn.dot_product_attention` with the mask as key lengths + `is_causal`, the form cuDNN
  takes (right padding only; tests run it with implementation='xla'). The bias is cast to the
  inputs' dtype for cuDNN, which adds it in that dtype."""
  lengths = None if key_mask is None else jnp.sum(key_mask.astype(jnp.int32), axis=-1)  # [batch]
  if bias is not None and implementation == 'cudnn':
    bias = bias.astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, is_causal=causal,
                                      key_value_seq_lengths=lengths, implementation=implementation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def softmax_as(logits, dtype):
  """softmax over the last axis in fp32, returned in `dtype`; the backward pass keeps only
  these `dtype` probabilities (jax.nn.softmax keeps fp32 ones: twice the memory in bf16)."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)


def _softmax_as_fwd(logits, dtype):
  probs = softmax_as(logits, dtype)
  return probs, probs


def _softmax_as_bwd(dtype, probs, grad):
  p, g = probs.astype(jnp.float32), grad.astype(jnp.float32)
  return (p * (g - jnp.sum(g * p, axis=-1, keepdims=True)),)  # fp32, the logits' dtype


softmax_as.defvjp(_softmax_as_fwd, _softmax_as_bwd)


def materialised_attention(q, k, v, *, bias, mask, scale: float, dropout: Callable, fp32_probs: bool = False):
  """Attention with dropout on the probabilities, grouped K/V heads (GQA). Shapes as in `attention`;
  logits, bias, mask and softmax statistics stay fp32. The probabilities are held and dropped in the
  compute dtype (v's; only those are kept for the backward pass), or with `fp32_probs` ('einsum', the
  original path) in fp32 and cast to the compute dtype after the dropout."""
  b, t, n, h = q.shape
  s, kv = k.shape[1], k.shape[2]
  qg = q.reshape(b, t, kv, n // kv, h)  # [batch, q_len, kv_heads, group, head_dim]
  logits = jnp.einsum('btkgh,bskh->bkgts', qg, k, preferred_element_type=jnp.float32) * scale
  logits = logits.reshape(b, n, t, s)  # [batch, heads, q_len, kv_len]
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  if fp32_probs:
    probs = dropout(jax.nn.softmax(logits, axis=-1)).astype(v.dtype)  # [batch, heads, q_len, kv_len]
  else:
    probs = dropout(softmax_as(logits, np.dtype(v.dtype)))  # [batch, heads, q_len, kv_len], compute dtype
  probs = probs.reshape(b, kv, n // kv, t, s)
  out = jnp.einsum('bkgts,bskh->btkgh', probs, v)
  return out.reshape(b, t, n, h)  # [batch, q_len, heads, head_dim]


def attention(q, k, v, *, bias=None, key_mask=None, causal: bool = False, scale: float,
              dropout: Optional[Callable] = None, implementation: str = 'einsum'):
  """q [batch, q_len, heads, head_dim]; k, v [batch, kv_len, kv_heads, head_dim] (GQA when
  kv_heads < heads); bias broadcastable to [batch, heads, q_len, kv_len] (T5's position bias);
  key_mask bool [batch, kv_len] or None; `dropout` a callable on the probabilities (None when
  attention dropout is off). -> [batch, q_len, heads, head_dim] in the compute dtype."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'attention implementation {implementation!r}: one of {", ".join(IMPLEMENTATIONS)}')
  t, s = q.shape[1], k.shape[1]
  if implementation == 'einsum':
    mask = dense_mask(key_mask, causal, t, s)
    if dropout is None:  # the XLA implementation of the same arithmetic (fused kernels where the platform has them)
      return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)
    return materialised_attention(q, k, v, bias=bias, mask=mask, scale=scale, dropout=dropout, fp32_probs=True)
  if dropout is not None:
    return materialised_attention(q, k, v, bias=bias, mask=dense_mask(key_mask, causal, t, s), scale=scale,
                                  dropout=dropout)
  if implementation == 'cudnn' and cudnn_supported(q, k, bias):
    return fused_attention(q, k, v, bias=bias, key_mask=key_mask, causal=causal, scale=scale, implementation='cudnn')
  return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=dense_mask(key_mask, causal, t, s), scale=scale,
                                      implementation='xla')
