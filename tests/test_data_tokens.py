"""Tokenizer, truncation (the target is never cut) and the batch layout of docs/ARCHITECTURE.md."""
import numpy as np
import pandas as pd
import pytest

from e2urec_jax.data import encode, tokenizer as tokenizer_lib
from e2urec_jax.data.prompts import Template
from e2urec_jax.data.layouts import DECODER_ONLY, ENCODER_DECODER
from e2urec_jax.data.tokens import SplitArrays, TokenizedData, make_batch
from e2urec_jax.errors import UserError

PROFILE = 'The user is a female. Her job is writer. Her age is 33.'
TITLES = ['Alpha Film (1990)', 'Beta Film (1991)', 'Gamma Film (1992)', 'Delta Film (1993)']
TARGET = 'Omega Target Movie (1999)'


@pytest.fixture(scope='module', params=[ENCODER_DECODER, DECODER_ONLY])
def setup(request):
  layout = request.param
  template = Template(layout=layout)
  corpus = [template.render(PROFILE, TITLES, [4, 2, 5, 1], TARGET)] * 20 + ['Yes. No. Answer: Yes. Answer: No.'] * 5
  tok = tokenizer_lib.train_tokenizer(corpus, 200, layout)
  return layout, template, tok, tokenizer_lib.special_ids(tok, layout)


def _row(profile=PROFILE, titles=TITLES, ratings=(4, 2, 5, 1), target=TARGET):
  return {'profile': [profile], 'history_titles': [list(titles)], 'history_ratings': [list(ratings)],
          'target_title': [target]}


def _length(tok, text, layout, specials):
  return len(tokenizer_lib.encode_texts(tok, [text], layout, specials)[0])


def test_trained_tokenizer_special_ids_and_answers(setup):
  layout, template, tok, specials = setup
  assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2, 3)
  prompt = template.render(PROFILE, TITLES, [4, 2, 5, 1], TARGET)
  ans = tokenizer_lib.answer_ids(tok, layout, specials, prompt, 'Yes.', 'No.')
  assert ans['answers']['yes'][-1] == 1 and ans['answers']['no'][-1] == 1
  assert ans['yes_id'] != ans['no_id']
  if layout == ENCODER_DECODER:
    assert ans['yes_id'] == tok('Yes.', add_special_tokens=False)['input_ids'][0]
    assert specials['bos_id'] is None and specials['decoder_start_id'] == 0
  else:
    assert prompt.endswith('Answer:')
    prompt_ids = tok(prompt, add_special_tokens=False)['input_ids']
    assert ans['yes_id'] == tok(prompt + ' Yes.', add_special_tokens=False)['input_ids'][len(prompt_ids)]
    assert tokenizer_lib.encode_texts(tok, [prompt], layout, specials)[0][0] == 3  # bos first


def test_no_truncation_when_it_fits(setup):
  layout, template, tok, specials = setup
  out = encode.fit_prompts(_row(), tok, template, layout, specials, max_len=500)
  assert out['history_shown'] == [4]
  assert out['prompt'][0] == template.render(PROFILE, TITLES, [4, 2, 5, 1], TARGET)


def test_history_is_cut_oldest_first_and_target_kept(setup):
  layout, template, tok, specials = setup
  two = template.render(PROFILE, TITLES[2:], [5, 1], TARGET)
  limit = _length(tok, two, layout, specials)  # exactly room for the two most recent items
  out = encode.fit_prompts(_row(), tok, template, layout, specials, max_len=limit)
  assert out['history_shown'] == [2]
  assert out['prompt'][0] == two
  assert len(out['input_ids'][0]) <= limit
  assert f'***{TARGET}***' in out['prompt'][0] and 'You should ONLY tell me yes or no.' in out['prompt'][0]
  assert out['input_ids'][0] == tokenizer_lib.encode_texts(tok, [two], layout, specials)[0]  # ids of the final text


def test_profile_cut_only_when_no_history_fits(setup):
  layout, template, tok, specials = setup
  bare = template.render('', [], [], TARGET)
  limit = _length(tok, bare, layout, specials) + 3
  out = encode.fit_prompts(_row(), tok, template, layout, specials, max_len=limit)
  assert out['history_shown'] == [0]
  text = out['prompt'][0]
  assert text.endswith(bare) and text.startswith('The user')  # a prefix of the profile survives
  assert len(out['input_ids'][0]) <= limit


def test_prompt_without_history_loses_profile_words(setup):
  # history_k=0: nothing to drop but profile words (this used to fail inside the tokenizer).
  layout, template, tok, specials = setup
  bare = template.render('', [], [], TARGET)
  limit = _length(tok, bare, layout, specials) + 3
  out = encode.fit_prompts(_row(titles=(), ratings=()), tok, template, layout, specials, max_len=limit)
  assert out['history_shown'] == [0]
  assert out['prompt'][0].endswith(bare) and out['prompt'][0].startswith('The user')
  assert len(out['input_ids'][0]) <= limit


def test_target_and_question_too_long_is_a_user_error(setup):
  layout, template, tok, specials = setup
  limit = _length(tok, template.render('', [], [], TARGET), layout, specials) - 1
  with pytest.raises(UserError, match=f'max_input_length={limit}'):
    encode.fit_prompts(_row(), tok, template, layout, specials, max_len=limit)


def test_encode_frame_through_datasets(setup, tmp_path):
  layout, template, tok, specials = setup
  frame = pd.DataFrame({'profile': [PROFILE, ''], 'history_titles': [TITLES, TITLES[:1]],
                        'history_ratings': [[4.0, 2.0, 5.0, 1.0], [3.0]], 'target_title': [TARGET, 'Beta Film (1991)']})
  out = encode.encode_frame(frame, tok, template, layout=layout, specials=specials, max_len=90,
                            cache_file=str(tmp_path / 'c.arrow'), progress=False, desc='t')
  assert out['prompt_ids'].shape == (2, 90) and out['prompt_ids'].dtype == np.int32
  for k in range(2):
    ids = tokenizer_lib.encode_texts(tok, [out['prompt'][k]], layout, specials)[0]
    assert out['prompt_len'][k] == len(ids)
    assert out['prompt_ids'][k, :len(ids)].tolist() == ids
    assert (out['prompt_ids'][k, len(ids):] == specials['pad_id']).all()
  assert (tmp_path / 'c.arrow').exists()


# ------------------------------------------------------------------ batches
def _data(layout):
  prompt_ids = np.zeros((5, 12), np.int32)
  lens = np.array([3, 5, 12, 7, 1], np.int32)
  for k, n in enumerate(lens):
    prompt_ids[k, :n] = 100 + 10 * k + np.arange(n)
  split = SplitArrays(prompt_ids=prompt_ids, prompt_len=lens, label=np.array([1, 0, 1, 0, 1], np.int32),
                      user_id=np.arange(5, dtype=np.int64), item_id=np.arange(5, dtype=np.int64))
  return TokenizedData(layout=layout, splits={'train': split}, answers={'yes': [7, 8, 1], 'no': [9, 1]},
                       yes_id=7, no_id=9, pad_id=0, decoder_start_id=0, bucket_lengths=(8, 16), eos_id=1)


def test_encoder_decoder_batch_layout():
  data = _data(ENCODER_DECODER)
  b = make_batch(data, 'train', [0, 1])
  assert b['input_ids'].shape == (2, 8)  # smallest bucket that fits 5 tokens
  assert b['input_ids'][0].tolist() == [100, 101, 102, 0, 0, 0, 0, 0]
  assert b['attention_mask'][1].tolist() == [1] * 5 + [0] * 3
  assert b['decoder_input_ids'].tolist() == [[0, 7, 8], [0, 9, 1]]
  assert b['answer_labels'].tolist() == [[7, 8, 1], [9, 1, 0]]
  assert b['answer_mask'].tolist() == [[1, 1, 1], [1, 1, 0]]
  assert b['answer_positions'].tolist() == [[0, 1, 2]] * 2
  assert b['label'].tolist() == [1, 0]
  assert all(v.dtype == (np.float32 if k == 'answer_mask' else np.int32) for k, v in b.items())
  flipped = make_batch(data, 'train', [0, 1], flip=True)
  assert flipped['answer_labels'].tolist() == [[9, 1, 0], [7, 8, 1]]
  assert flipped['label'].tolist() == [1, 0]  # the true label; only the answer flips
  assert make_batch(data, 'train', [2])['input_ids'].shape == (1, 16)


def test_decoder_only_batch_layout():
  data = _data(DECODER_ONLY)
  b = make_batch(data, 'train', [0, 3])
  # row 0: prompt 3 + yes[:-1] (2 tokens) = 5; row 3: prompt 7 + no[:-1] (1) = 8 -> bucket 8
  assert b['input_ids'].shape == (2, 8)
  assert b['input_ids'][0].tolist() == [100, 101, 102, 7, 8, 0, 0, 0]
  assert b['input_ids'][1].tolist() == [130, 131, 132, 133, 134, 135, 136, 9]
  assert b['attention_mask'].sum(1).tolist() == [5, 8]
  assert b['answer_positions'][0].tolist() == [2, 3, 4]  # prompt_len-1 .. prompt_len+len(answer)-2
  assert b['answer_positions'][1][:2].tolist() == [6, 7]
  assert b['answer_mask'].tolist() == [[1, 1, 1], [1, 1, 0]]
  assert 'decoder_input_ids' not in b
  # the logit at each answer position predicts the next input token (teacher forcing)
  for r in range(2):
    for pos, lab, m in zip(b['answer_positions'][r], b['answer_labels'][r], b['answer_mask'][r]):
      if m and pos + 1 < 8 and b['attention_mask'][r, pos + 1]:
        assert b['input_ids'][r, pos + 1] == lab


def test_padding_rows_and_forced_length():
  data = _data(ENCODER_DECODER)
  b = make_batch(data, 'train', [1], batch_size=4, length=16)
  assert b['input_ids'].shape == (4, 16)
  assert b['label'].tolist() == [0, -1, -1, -1]
  assert b['answer_mask'][1:].sum() == 0
  assert b['attention_mask'][1:, 0].tolist() == [1, 1, 1]  # never an all-masked row
  with pytest.raises(ValueError, match='shorter'):
    make_batch(data, 'train', [2], length=8)
