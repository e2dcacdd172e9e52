"""Tiny random transformers (PyTorch) checkpoints and padded batches for the model tests.

Weights are re-drawn larger than transformers' init so logits are O(1-10) and a wrong
detail (rope frequency, bias, scaling) shows up far above the 1e-4 tolerance.
"""
import numpy as np
import torch
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


def torch_model(hf_config, seed=0):
  """A random PyTorch model with large-ish weights (eval mode)."""
  torch.manual_seed(seed)
  if hf_config.model_type == 't5':
    model = transformers.T5ForConditionalGeneration(hf_config)
    if not hf_config.scale_decoder_outputs:  # v1.1: an own lm_head (transformers 5 ties by default)
      model.lm_head.weight = torch.nn.Parameter(torch.empty(hf_config.vocab_size, hf_config.d_model))
  else:
    model = transformers.AutoModelForCausalLM.from_config(hf_config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1:
        p.copy_(1.0 + 0.2 * torch.randn_like(p) if 'norm' in name else 0.3 * torch.randn_like(p))
      elif 'shared' in name or 'embed' in name or 'relative_attention_bias' in name:
        p.normal_(0, 1.0)
      elif 'lm_head' in name:
        p.normal_(0, 0.3)
      else:
        p.normal_(0, p.shape[1] ** -0.5)
  return model.eval()


def save_torch(model, path):
  model.save_pretrained(path)
  return str(path)


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


def torch_logits(model, ids, mask, decoder_ids=None):
  kwargs = dict(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long))
  if decoder_ids is not None:
    kwargs['decoder_input_ids'] = torch.tensor(decoder_ids, dtype=torch.long)
  with torch.no_grad():
    return model(**kwargs).logits.float().numpy()


def decoder_ids(vocab, batch=3, length=4, seed=1, start=0):
  ids = np.random.RandomState(seed).randint(2, vocab, (batch, length)).astype(np.int32)
  ids[:, 0] = start
  return ids
