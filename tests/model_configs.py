"""Tiny model configs (transformers, no PyTorch) and padded batches for the model tests.

The PyTorch side (random checkpoints, reference logits) is in models_testlib.py: only the
tests that compare with PyTorch import it.
"""
import numpy as np
import transformers

T5_BASE = dict(vocab_size=120, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.1,
               decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
LLAMA_BASE = dict(vocab_size=150, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
LLAMA3_ROPE = {'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
               'original_max_position_embeddings': 32, 'rope_theta': 10000.0}


def t5_config(kind: str) -> transformers.T5Config:
  if kind == 'v1.0':
    return transformers.T5Config(**T5_BASE, feed_forward_proj='relu')
  return transformers.T5Config(**T5_BASE, feed_forward_proj='gated-gelu', tie_word_embeddings=False)


def llama_config(kind: str):
  if kind == 'llama3_gqa':
    return transformers.LlamaConfig(**LLAMA_BASE, rope_parameters=dict(LLAMA3_ROPE))
  if kind == 'qwen2':
    return transformers.Qwen2Config(**LLAMA_BASE, rope_theta=1000.0)
  if kind == 'tied':  # SmolLM2-like
    return transformers.LlamaConfig(**LLAMA_BASE, tie_word_embeddings=True)
  raise ValueError(kind)


def padded_batch(vocab, batch=3, length=40, seed=0, pad_id=0):
  """Right-padded ids and mask: full row, half row, short row."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(2, vocab, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  lengths = [length, length // 2 + 1, 5][:batch] + [length] * max(0, batch - 3)
  for i, n in enumerate(lengths):
    mask[i, n:] = 0
  ids[mask == 0] = pad_id
  return ids, mask


def decoder_ids(vocab, batch=3, length=4, seed=1, start=0):
  ids = np.random.RandomState(seed).randint(2, vocab, (batch, length)).astype(np.int32)
  ids[:, 0] = start
  return ids
