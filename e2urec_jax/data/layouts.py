"""How a model reads a sample, the one thing data/ needs to know about the model.

'encoder-decoder' (T5): the prompt is the encoder input, the answer the decoder's.
'decoder-only' (Llama, Qwen, ...): the answer follows the prompt in one sequence.
"""
ENCODER_DECODER = 'encoder-decoder'
DECODER_ONLY = 'decoder-only'
LAYOUTS = (ENCODER_DECODER, DECODER_ONLY)

_OF_FAMILY = {'t5': ENCODER_DECODER, 'llama': DECODER_ONLY}  # config.model.scratch.family -> layout


def of_family(family: str) -> str:
  """The layout of a model family of config.model.scratch (or of a manifest written before layouts)."""
  return _OF_FAMILY[family]
