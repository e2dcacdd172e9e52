"""How a model reads a sample, the one thing data/ needs to know about the model.

'encoder-decoder' (T5): the prompt is the encoder input, the answer the decoder's.
'decoder-only' (Llama, Qwen, ...): the answer follows the prompt in one sequence.
The names and each family's layout are `names.LAYOUTS` and `names.FAMILIES`.
"""
from e2urec_jax import names
from e2urec_jax.names import DECODER_ONLY, ENCODER_DECODER  # noqa: F401 (data/'s names for them)


def of_family(family: str) -> str:
  """The layout of a model family of config.model.scratch (or of a manifest written before layouts);
  a UserError naming an unknown family."""
  return names.family(family, 'model family').layout
