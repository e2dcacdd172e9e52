"""The paper's "simple" prompt (ReLLa / E2URec): profile, rated history, target, yes/no question.

One `Template` renders every data set; only the nouns change ("movies ... watched",
"books ... read", "items ... interacted with"). The text is split into a profile,
history lines and a fixed tail, so the tokeniser can drop history items (oldest
first) and then profile words, and never touch the target or the question.
"""
import dataclasses

from e2urec_jax.data.layouts import DECODER_ONLY, ENCODER_DECODER

YES, NO = 'Yes.', 'No.'
ANSWER_CUE = '\nAnswer:'  # Decoder-only prompts end with it; the answer follows after a space.


def movielens_profile(gender: str, occupation: str, age: str) -> str:
  """'The user is a female. Her job is writer. Her age is 25.' (ReLLa's wording)."""
  gender = str(gender).strip().upper()
  word, pronoun = {'M': ('male', 'His'), 'F': ('female', 'Her')}.get(gender, ('person', 'Their'))
  return f'The user is a {word}. {pronoun} job is {occupation}. {pronoun} age is {age}.'


def columns_profile(values: dict) -> str:
  """A profile from a user table's own columns: "The user's country is FR. The user's plan is free."."""
  parts = [f"The user's {k.replace('_', ' ')} is {v}." for k, v in values.items()
           if v is not None and str(v).strip() and str(v) != 'nan']
  return ' '.join(parts)


def stars(rating: float) -> str:
  r = float(rating)
  text = str(int(r)) if r == int(r) else f'{r:.1f}'
  return f'{text} star' if text == '1' else f'{text} stars'


@dataclasses.dataclass(frozen=True)
class Template:
  """Renders prompts and answers for one data set and layout ('encoder-decoder' or 'decoder-only')."""
  layout: str = ENCODER_DECODER
  item_noun: str = 'movie'
  verb: str = 'watched'
  rating_scale: int = 5

  @property
  def plural(self) -> str:
    return self.item_noun + 's'

  def history_text(self, titles, ratings) -> str:
    """'The user watched ... (out of 5 stars): 1. A (4 stars), 2. B (2 stars).' or '' for no items."""
    if not len(titles):
      return ''
    items = ', '.join(f'{i + 1}. {t} ({stars(r)})' for i, (t, r) in enumerate(zip(titles, ratings)))
    return (f'The user {self.verb} the following {self.plural} in the past, and rated them '
            f'(out of {self.rating_scale} stars): {items}.')

  def question(self, target_title: str) -> str:
    """The fixed tail: never truncated."""
    text = (f'Based on the {self.plural} the user has {self.verb}, deduce if the user will like the '
            f'{self.item_noun} ***{target_title}***. You should ONLY tell me yes or no.')
    return text + ANSWER_CUE if self.layout == DECODER_ONLY else text

  def render(self, profile: str, titles, ratings, target_title: str) -> str:
    parts = [profile.strip(), self.history_text(titles, ratings), self.question(target_title)]
    return ' '.join(p for p in parts if p)

  def answer(self, label: int) -> str:
    """The target text: 'Yes.' / 'No.' (decoder-only models read it after a space)."""
    return YES if label else NO
