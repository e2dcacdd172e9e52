"""Our own Flax linen T5 and Llama-family models, Hugging Face checkpoint I/O, and LoRA.

    model, params, tokenizer = load_pretrained('t5-base')
    logits = forward(model, params, input_ids, attention_mask, decoder_input_ids)
    adapters = lora.init_adapters(params, rng, r=16, targets=lora.default_targets(model.family))
    student = lora.configure(model, r=16, alpha=32, dropout=0.05)
    scores = answer_logits(student, params, batch, adapters=adapters)
"""
from e2urec_jax.models import lora
from e2urec_jax.models.api import (FAMILIES, abstract_params, answer_logits, answer_token_ids, forward,
                                   forward_flops, init_params, load_pretrained, model_from_hf_config, model_options,
                                   save_pretrained, scratch_hf_config)
from e2urec_jax.models.llama import Llama, LlamaArch
from e2urec_jax.models.t5 import T5, T5Arch

__all__ = ['FAMILIES', 'Llama', 'LlamaArch', 'T5', 'T5Arch', 'abstract_params', 'answer_logits', 'answer_token_ids',
           'forward', 'forward_flops', 'init_params', 'load_pretrained', 'lora', 'model_from_hf_config',
           'model_options', 'save_pretrained', 'scratch_hf_config']
