"""Which tokenizer, which layout (encoder-decoder or decoder-only), and the answer token ids.

config.model.tokenizer == 'train' builds a small BPE tokenizer on the prompts (scratch
models: a pretrained vocabulary would be mostly unused rows); otherwise the model's own
tokenizer is loaded. Special ids of a trained one follow T5 for the first three
(pad 0, eos 1, unk 2) and add bos 3, so T5 and Llama scratch models share it.
The yes/no ids are read off the tokenizer, never hard-coded: "Yes." is one token in
one vocabulary and two in another.
"""
import os
import string
import sys

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from e2urec_jax import names, storage
from e2urec_jax.data.layouts import DECODER_ONLY, ENCODER_DECODER
from e2urec_jax.errors import UserError

PAD, EOS, UNK, BOS = '<pad>', '</s>', '<unk>', '<s>'


def resolve_layout(model_cfg) -> tuple[str, int | None]:
  """(layout, the model's decoder_start_token_id or None) for config.model: its family's
  (names.FAMILIES); a model_type or scratch family of no family is refused by name."""
  if not model_cfg.name_or_path:
    family = model_cfg.scratch.family
    if family not in names.FAMILIES:
      choices = ', '.join(map(repr, names.FAMILY_NAMES))
      raise UserError(f'config.model.scratch.family={family!r}: use one of {choices}')
    return names.FAMILIES[family].layout, None
  from transformers import AutoConfig  # heavy: transformers loads torch
  try:
    hf = AutoConfig.from_pretrained(model_cfg.name_or_path)
  except Exception as e:  # offline, unknown id, no config.json
    raise UserError(f'cannot read the model config of {model_cfg.name_or_path!r} ({type(e).__name__}); pass '
                    '--config.model.name_or_path=<local folder with config.json>, or "" for a scratch model')
  try:
    layout = names.family_of_model_type(hf.model_type).layout
  except UserError as e:
    raise UserError(f'{model_cfg.name_or_path}: {e}') from None
  if layout == ENCODER_DECODER:
    return ENCODER_DECODER, getattr(hf, 'decoder_start_token_id', None)
  return DECODER_ONLY, None


def train_tokenizer(texts, vocab_size: int, layout: str, progress: bool = False):
  """A BPE tokenizer (whitespace + punctuation pre-tokenizer) trained on `texts`, as a transformers tokenizer."""
  from transformers import PreTrainedTokenizerFast  # heavy: transformers loads torch
  tok = Tokenizer(models.BPE(unk_token=UNK))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation; spaces are not tokens
  alphabet = [c for c in string.printable if not c.isspace()]  # unseen ASCII never becomes <unk>
  # tokenizers' bars draw only on a terminal; elsewhere (a log file, a pipe) they print blank lines.
  trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=[PAD, EOS, UNK, BOS],
                                initial_alphabet=alphabet, show_progress=progress and sys.stderr.isatty())
  tok.train_from_iterator(texts, trainer)
  # Plain tokenizer(text) calls outside this package add the same ends as encode_prompt does.
  if layout == ENCODER_DECODER:
    tok.post_processor = processors.TemplateProcessing(single=f'$A {EOS}', special_tokens=[(EOS, 1)])
  else:
    tok.post_processor = processors.TemplateProcessing(single=f'{BOS} $A', special_tokens=[(BOS, 3)])
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, bos_token=BOS)
  assert [fast.pad_token_id, fast.eos_token_id, fast.unk_token_id, fast.bos_token_id] == [0, 1, 2, 3]
  return fast


def load_tokenizer(model_cfg, workdir: str):
  """The run's tokenizer: <workdir>/tokenizer when trained on the fly, else the model's own."""
  from transformers import AutoTokenizer  # heavy: transformers loads torch
  if model_cfg.tokenizer == 'train':
    path = os.path.join(workdir, 'tokenizer')
    if not storage.isdir(path):
      raise UserError(f'no tokenizer in {path}; run `prepare` for this workdir first')
    path = storage.local_copy(path)  # a gs://... workdir's tokenizer, downloaded
  else:
    path = model_cfg.tokenizer or model_cfg.name_or_path
    if not path:
      raise UserError("a scratch model (config.model.name_or_path='') needs config.model.tokenizer='train' "
                      'or a tokenizer name/path in config.model.tokenizer')
  try:
    return AutoTokenizer.from_pretrained(path)
  except Exception as e:  # offline, unknown id
    raise UserError(f'cannot load tokenizer {path!r} ({type(e).__name__}: {str(e)[:120]}); pass a local folder '
                    'in --config.model.name_or_path (or --config.model.tokenizer)')


def special_ids(tok, layout: str, decoder_start: int | None = None) -> dict:
  """pad/eos/bos/decoder-start ids. Decoder-only models without a pad token pad with eos."""
  eos = tok.eos_token_id
  if eos is None:
    raise UserError(f'tokenizer {tok.name_or_path!r} defines no end-of-sequence token; answers need one')
  pad = tok.pad_token_id if tok.pad_token_id is not None else eos
  bos = tok.bos_token_id if layout == DECODER_ONLY else None  # encoder inputs never start with bos
  start = pad if decoder_start is None else decoder_start  # T5 starts decoding from pad
  return {'pad_id': int(pad), 'eos_id': int(eos), 'bos_id': None if bos is None else int(bos),
          'decoder_start_id': int(start) if layout == ENCODER_DECODER else int(pad)}


def encode_texts(tok, texts, layout: str, specials: dict) -> list[list[int]]:
  """Token ids as the model reads them: encoder-decoder text + eos; decoder-only bos (if any) + text."""
  texts = list(texts)
  if not texts:  # the tokenizer fails on an empty batch (a prompt without history has no shorter candidates)
    return []
  ids = tok(texts, add_special_tokens=False)['input_ids']
  if layout == ENCODER_DECODER:
    return [x + [specials['eos_id']] for x in ids]
  if specials['bos_id'] is not None:
    return [[specials['bos_id']] + x for x in ids]
  return ids


def answer_ids(tok, layout: str, specials: dict, sample_prompt: str, yes: str, no: str) -> dict:
  """{'answers': {'yes': ids, 'no': ids}, 'yes_id', 'no_id'}: answer ids end with eos.

  Encoder-decoder: the ids of the answer text alone. Decoder-only: the ids that follow the prompt in
  tokenizer(prompt + ' ' + answer) (the leading space belongs to the answer's first token).
  """
  eos = specials['eos_id']
  out = {}
  for name, text in (('yes', yes), ('no', no)):
    if layout == ENCODER_DECODER:
      ids = tok(text, add_special_tokens=False)['input_ids']
    else:
      prompt_ids = tok(sample_prompt, add_special_tokens=False)['input_ids']
      full = tok(sample_prompt + ' ' + text, add_special_tokens=False)['input_ids']
      if full[:len(prompt_ids)] != prompt_ids:
        raise UserError(f'tokenizer {tok.name_or_path!r} merges the prompt end with the answer {text!r}; '
                        'the answer tokens would depend on the prompt (use another tokenizer)')
      ids = full[len(prompt_ids):]
    if not ids:
      raise UserError(f'tokenizer {tok.name_or_path!r} maps the answer {text!r} to no tokens')
    out[name] = [int(i) for i in ids] + [int(eos)]
  if out['yes'][0] == out['no'][0]:
    raise UserError(f'tokenizer {tok.name_or_path!r}: "Yes." and "No." start with the same token; '
                    'the first answer token must tell them apart')
  return {'answers': out, 'yes_id': out['yes'][0], 'no_id': out['no'][0]}
