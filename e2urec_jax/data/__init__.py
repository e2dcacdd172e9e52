"""Data pipeline: raw files -> samples -> prompts -> token arrays -> batches.

Public names are imported lazily, so `import e2urec_jax.data` stays cheap (no pandas,
datasets or transformers until a name that needs them is used).
"""
import importlib

_EXPORTS = {
    'prepare': 'e2urec_jax.data.prepare',
    'load_tokenized': 'e2urec_jax.data.tokens',
    'make_batch': 'e2urec_jax.data.tokens',
    'TokenizedData': 'e2urec_jax.data.tokens',
    'SplitArrays': 'e2urec_jax.data.tokens',
    'load_tokenizer': 'e2urec_jax.data.tokenizer',
    'read_source': 'e2urec_jax.data.readers',
    'RawData': 'e2urec_jax.data.sources',
    'Template': 'e2urec_jax.data.prompts',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
