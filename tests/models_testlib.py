"""Tiny random transformers (PyTorch) checkpoints and their logits, for the tests that compare with PyTorch.

Weights are re-drawn larger than transformers' init so logits are O(1-10) and a wrong
detail (rope frequency, bias, scaling) shows up far above the 1e-4 tolerance. The configs
and batches are model_configs.py's (re-exported: one import for these tests).
"""
import torch
import transformers

from model_configs import (LLAMA3_ROPE, LLAMA_BASE, T5_BASE, decoder_ids, llama_config, padded_batch,  # noqa: F401
                           t5_config)


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


def torch_logits(model, ids, mask, decoder_ids=None):
  kwargs = dict(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long))
  if decoder_ids is not None:
    kwargs['decoder_input_ids'] = torch.tensor(decoder_ids, dtype=torch.long)
  with torch.no_grad():
    return model(**kwargs).logits.float().numpy()
