"""The prompts: profile, rated history, target, yes/no question.

`Template` (config.data.protocol 'default') is a paraphrase of the paper's "simple" prompt
(ReLLa / E2URec) that reads the same for every data set; only the nouns change ("movies ...
watched", "books ... read", "items ... interacted with"). `PaperTemplate` (protocol 'paper') is
the original code's ML-1M prompt verbatim (data_preprocess/load_prompt_ml1m.py, "simple"):
pronoun from the user's gender, the history as a Python list of '0. Title (4 stars)' strings,
"in order", and the "Note that ..." line. Both render from the same pieces (profile, history,
target, and the `subject` pronoun only the paper's uses), so the tokeniser can drop history items
(oldest first) and then profile words, and never touch the target or the question.
`template_for` picks one.
"""
import dataclasses

from e2urec_jax.data.layouts import DECODER_ONLY, ENCODER_DECODER

YES, NO = 'Yes.', 'No.'
ANSWER_CUE = '\nAnswer:'  # Decoder-only prompts end with it; the answer follows after a space.


def movielens_profile(gender: str, occupation: str, age: str, *, paper: bool = False, zip_code: str = '') -> str:
  """'The user is a female. Her job is writer. Her age is 25.' (ReLLa's wording), and
  ' Her zip code is 55105.' when `zip_code` is given (config.data.profile_zip).

  paper=True: as the original code, every gender other than 'M' reads as female."""
  gender = str(gender).strip().upper()
  if paper:
    gender = 'M' if gender == 'M' else 'F'
  word, pronoun = {'M': ('male', 'His'), 'F': ('female', 'Her')}.get(gender, ('person', 'Their'))
  text = f'The user is a {word}. {pronoun} job is {occupation}. {pronoun} age is {age}.'
  zip_code = str(zip_code).strip()
  return f'{text} {pronoun} zip code is {zip_code}.' if zip_code else text


def movielens_subject(gender: str) -> str:
  """The pronoun the paper's prompt refers to the user with: 'he' for 'M', else 'she' (the original
  maps every gender other than 'M' to female, as `movielens_profile(paper=True)` does)."""
  return 'he' if str(gender).strip().upper() == 'M' else 'she'


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

  def render(self, profile: str, titles, ratings, target_title: str, subject: str = '') -> str:
    """`subject` (the paper's pronoun) is not used by this template."""
    parts = [profile.strip(), self.history_text(titles, ratings), self.question(target_title)]
    return ' '.join(p for p in parts if p)

  def answer(self, label: int) -> str:
    """The target text: 'Yes.' / 'No.' (decoder-only models read it after a space)."""
    return YES if label else NO


@dataclasses.dataclass(frozen=True)
class PaperTemplate(Template):
  """The original code's prompt (load_prompt_ml1m.py, "simple"), character for character on
  MovieLens:

    The user is a male. His job is programmer. His age is 25-34.
    He watched the following movies in order in the past, and rated them:
    ['0. Toy Story (1995) (4 stars)', '1. Heat (1995) (1 star)']
    Based on the movies he has watched, deduce if he will like the movie ***Jumanji (1995)***.
    Note that more stars the user rated the movie, the user liked the movie more.
    You should ONLY tell me yes or no.

  `subject` is the pronoun ('he'/'she', from the user table's gender); data sets without one
  (GoodReads, csv) read 'the user' and their own nouns, a form the original has no text for.
  Decoder-only layouts end with the answer cue, as `Template`."""

  def history_text(self, titles, ratings, subject: str = '') -> str:
    """'He watched ... rated them:\n[...]': the list is Python's own rendering of the strings."""
    items = [f'{i}. {t} ({stars(r)})' for i, (t, r) in enumerate(zip(titles, ratings))]
    return f'{_capitalised(_subject(subject))} {self.verb} the following {self.plural} in order in the past, ' \
           f'and rated them:\n{items}'

  def question(self, target_title: str, subject: str = '') -> str:
    who = _subject(subject)
    text = (f'Based on the {self.plural} {who} has {self.verb}, deduce if {who} will like the {self.item_noun} '
            f'***{target_title}***.\nNote that more stars the user rated the {self.item_noun}, the user liked the '
            f'{self.item_noun} more.\nYou should ONLY tell me yes or no.')
    return text + ANSWER_CUE if self.layout == DECODER_ONLY else text

  def render(self, profile: str, titles, ratings, target_title: str, subject: str = '') -> str:
    parts = [profile.strip(), self.history_text(titles, ratings, subject), self.question(target_title, subject)]
    return '\n'.join(p for p in parts if p)


def _subject(subject: str) -> str:
  return str(subject).strip() or 'the user'


def _capitalised(text: str) -> str:
  return text[:1].upper() + text[1:]


def template_for(protocol: str, layout: str, raw) -> Template:
  """The template of config.data.protocol for a data set (`raw`: its nouns and rating scale)."""
  kind = PaperTemplate if protocol == 'paper' else Template
  return kind(layout, raw.item_noun, raw.verb, raw.rating_scale)
