"""What values a config field accepts: small rules that `config.validate` applies to every field.

A rule is called with a value and returns None when it is fine, else what the value must be
("one of 'full', 'lora'", "a whole number >= 1"); `config.validate` turns that into a one-line
UserError naming the field and the bad value. Method specs declare rules for their own
config section with the same helpers.
"""
import math


class Rule:
  """value -> None (fine) or what the value must be."""

  def __init__(self, check, wants: str):
    self._check, self.wants = check, wants

  def __call__(self, value):
    try:
      ok = self._check(value)
    except (TypeError, ValueError):
      ok = False
    return None if ok else self.wants


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _bounds_text(low, high, low_open, high_open) -> str:
  parts = []
  if low is not None:
    parts.append(f'{">" if low_open else ">="} {low:g}')
  if high is not None:
    parts.append(f'{"<" if high_open else "<="} {high:g}')
  return ' and '.join(parts)


def _within(x, low, high, low_open, high_open) -> bool:
  if low is not None and (x <= low if low_open else x < low):
    return False
  if high is not None and (x >= high if high_open else x > high):
    return False
  return True


def one_of(*choices) -> Rule:
  """Exactly one of `choices` (case matters: 'Full' is not 'full')."""
  return Rule(lambda x: x in choices, 'one of ' + ', '.join(repr(c) for c in choices))


def integer(low=None, high=None) -> Rule:
  """A whole number within [low, high] (either bound optional)."""
  bounds = _bounds_text(low, high, False, False)
  return Rule(lambda x: _is_int(x) and _within(x, low, high, False, False),
              'a whole number' + (f' {bounds}' if bounds else ''))


def number(low=None, high=None, *, low_open=False, high_open=False) -> Rule:
  """A finite number within the bounds (open bounds exclude the limit itself)."""
  bounds = _bounds_text(low, high, low_open, high_open)
  return Rule(lambda x: _is_number(x) and _within(float(x), low, high, low_open, high_open),
              'a finite number' + (f' {bounds}' if bounds else ''))


POSITIVE_INT = integer(1)
NON_NEGATIVE_INT = integer(0)
POSITIVE = number(0, low_open=True)  # learning rates, strengths: finite and > 0
NON_NEGATIVE = number(0)
FINITE = number()
PROBABILITY = number(0, 1, high_open=True)  # dropout rates: 1 would drop everything
BOOLEAN = Rule(lambda x: isinstance(x, bool), 'true or false')
TEXT = Rule(lambda x: isinstance(x, str), 'a string')


def sequence(item: Rule, *, length=None, nonempty=True) -> Rule:
  """A tuple/list whose every item passes `item` (of `length` items when given)."""
  def check(xs):
    return (isinstance(xs, (tuple, list)) and (not nonempty or len(xs) > 0)
            and (length is None or len(xs) == length) and all(item(x) is None for x in xs))
  count = f'{length} ' if length is not None else ''
  return Rule(check, f'a sequence of {count}items, each {item.wants}')


def comma_list(item: Rule, *, parse=str, nonempty=False, separators=',') -> Rule:
  """A comma-separated string whose items (after `parse`) pass `item`; '' allowed unless nonempty."""
  def check(text):
    if not isinstance(text, str):
      return False
    for sep in separators[1:]:
      text = text.replace(sep, separators[0])
    items = [t.strip() for t in text.split(separators[0]) if t.strip()]
    return (items or not nonempty) and all(item(parse(t)) is None for t in items)
  return Rule(check, f'a comma-separated list{" (not empty)" if nonempty else ""}, each item {item.wants}')


def split_list(text: str) -> list[str]:
  """The items of a comma-separated config string."""
  return [t.strip() for t in str(text).split(',') if t.strip()]
