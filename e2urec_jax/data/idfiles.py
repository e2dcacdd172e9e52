"""The files a user hands to `predict` and `forget`: (user, item) pairs and lists of user ids.

Every problem is one UserError that names the file and the line (1-based, counting blank and
comment lines) and says what the line should look like, never a parser's traceback:

pairs (predict --input, forget --interactions): UTF-8 text, one pair a line, fields separated
  by commas (or tabs); an optional header naming the columns, which must include user_id and
  item_id (other columns are allowed and ignored); without a header each line is exactly
  user_id,item_id. Blank lines and lines starting with '#' are skipped.
(user, category) pairs (forget --categories=FILE): the same with the columns user_id,category;
  inline, --categories=USER:CATEGORY[,USER:CATEGORY...].
user ids (forget --users=FILE): UTF-8 text, ids separated by commas or new lines, '#' comments.
Ids are kept as the file spells them (no number parsing: '013' stays '013'), the space around
a field aside, and are compared with the source's ids (its users/items `key` column) exactly,
wherever they are used (forget, audit, predict). `near` finds the source id that an id not in it
was probably meant to be (leading zeros, a sign, other Unicode digits, stray invisible characters),
so a refusal can suggest it; `cut` shortens an id echoed in a message.
"""
import os
import unicodedata

from e2urec_jax.errors import UserError

USER, ITEM, CATEGORY = 'user_id', 'item_id', 'category'


def _lines(path: str, what: str) -> list[tuple[int, str]]:
  """(line number, text) of every line of `path`; UTF-8 (a BOM is dropped), else the first bad line named."""
  if not path or not os.path.isfile(path):
    raise UserError(f'{what}={cut(path)}: no such file')
  with open(path, 'rb') as f:
    raw = f.read()
  if not raw.strip():
    raise UserError(f'{path} is empty; {what} needs a file with one entry a line')
  out = []
  for n, line in enumerate(raw.split(b'\n'), start=1):
    try:
      text = line.decode('utf-8')
    except UnicodeDecodeError:
      raise UserError(f'{path} line {n}: not UTF-8 text ({line[:40]!r}); save the file as UTF-8 text')
    if n == 1:
      text = text.lstrip('\ufeff')
    out.append((n, text.rstrip('\r')))
  return out


def _fields(text: str) -> list[str]:
  sep = '\t' if '\t' in text and ',' not in text else ','
  return [f.strip().strip('"').strip() for f in text.split(sep)]


def read_pairs(path: str, what: str, second: str = ITEM) -> list[tuple[str, str, int]]:
  """[(user id, item id, line number)] of a pairs file (see the module docstring); `second` names
  the second column (CATEGORY: a (user, category) file)."""
  lines = [(n, t) for n, t in _lines(path, what) if t.strip() and not t.lstrip().startswith('#')]
  if not lines:
    raise UserError(f'{path} holds only comments; {what} needs {USER},{second} lines')
  n0, first = lines[0]
  names = [f.lower() for f in _fields(first)]
  if USER in names or second in names or (names and 'user' in names[0] and not any(c.isdigit() for c in names[0])):
    if USER in names and second in names:
      columns, width = (names.index(USER), names.index(second)), len(names)
    elif len(names) == 2:
      columns, width = (0, 1), 2  # a header with other names for the two columns
    else:
      missing = [c for c in (USER, second) if c not in names]
      raise UserError(f'{path} line {n0}: the header {cut(first)} names no {" and no ".join(missing)} column; '
                      f'name the columns {USER},{second}')
    lines = lines[1:]
    if not lines:
      raise UserError(f'{path} has a header but no pairs; add {USER},{second} lines below it')
  else:
    columns, width = (0, 1), 2
  out = []
  for n, text in lines:
    fields = _fields(text)
    if len(fields) != width:
      raise UserError(f'{path} line {n}: expected {USER},{second}{",..." if width > 2 else ""} ({width} fields), '
                      f'found {len(fields)}: {cut(text)}; fix or remove that line')
    user, item = fields[columns[0]], fields[columns[1]]
    if not user or not item:
      raise UserError(f'{path} line {n}: empty {USER if not user else second} in {cut(text)}; every line needs both')
    out.append((user, item, n))
  return out


def read_user_categories(spec: str, what: str = '--categories') -> list[tuple[str, str, str]]:
  """[(user id, category, where it was given)]: inline USER:CATEGORY entries separated by commas, or
  a file of user_id,category lines (see the module docstring). Both are kept as spelt."""
  spec = spec.strip()
  if os.path.isfile(spec):
    return [(u, c, f'{spec} line {n}') for u, c, n in read_pairs(spec, what, CATEGORY)]
  if os.sep in spec or spec.endswith(('.txt', '.csv')):
    raise UserError(f'{what}={spec!r}: no such file; pass a file of {USER},{CATEGORY} lines or '
                    f'{what}=USER:CATEGORY (e.g. {what}=196:Comedy)')
  out = []
  for token in spec.split(','):
    user, colon, category = (t.strip() for t in token.partition(':'))
    if not token.strip():
      continue
    if not colon or not user or not category:
      raise UserError(f'{what}: {cut(token.strip())} is not USER:CATEGORY; write each request as a user id, a '
                      f'colon and a category as the item table spells it ({what}=196:Comedy,305:Drama)')
    out.append((user, category, what))
  if not out:
    raise UserError(f'{what} names no USER:CATEGORY: the forget set would be empty ({what}=196:Comedy)')
  return out


def read_user_ids(spec: str, what: str = '--users') -> list[tuple[str, str]]:
  """[(user id, where it was given)]: ids inline ('196,305') or a file of ids (one a line, or comma-separated)."""
  spec = spec.strip()
  if os.path.isfile(spec):
    lines, source = _lines(spec, f'{what} file'), f'{what} file {spec}'
  elif os.sep in spec or spec.endswith(('.txt', '.csv')):
    raise UserError(f'{what}={cut(spec)}: no such file; pass a file of user ids (one a line) or ids ({what}=196,305)')
  else:
    lines, source = [(0, spec)], what
  out = []
  for n, text in lines:
    if text.lstrip().startswith('#'):
      continue
    for token in text.split(','):
      token = token.strip()
      if not token:
        continue
      if any(c.isspace() for c in token):
        where = f'{spec} line {n}' if n else what
        raise UserError(f'{where}: {cut(token)} is not one user id (ids hold no spaces); put one id a line or '
                        'separate ids by commas')
      out.append((token, f'{source} line {n}' if n else source))
  if not out:
    raise UserError(f'{source} lists no user ids: the forget set would be empty; pass ids ({what}=196,305) '
                    'or a file with one id a line')
  return out


ECHO = 60  # characters of an id echoed in a message


def cut(text, limit: int = ECHO, *, quote: bool = True) -> str:
  """repr of `text` (or the text itself, quote=False) cut to about `limit` characters (a huge id
  stays a short one-line message)."""
  text = str(text)
  show = repr if quote else str
  if len(text) <= limit:
    return show(text)
  return show(text[:limit]) + f'... ({len(text)} characters)'


def loose(text: str) -> str:
  """What an id reads as to a person: NFKC (full-width, superscript digits -> ASCII), other scripts'
  decimal digits as ASCII, no space or invisible characters, no sign or leading zeros on a number.
  Only for suggestions: ids are always compared exactly."""
  text = unicodedata.normalize('NFKC', str(text))
  out = []
  for c in text:
    if c.isspace() or unicodedata.category(c) in ('Cf', 'Cc', 'Zs'):
      continue
    d = unicodedata.decimal(c, None)
    out.append(str(d) if d is not None else c)
  text = ''.join(out)
  digits = text[1:] if text[:1] in '+-' else text
  if digits and digits.isascii() and digits.isdigit():
    return digits.lstrip('0') or '0'
  return text.casefold()


def near(text: str, known) -> str | None:
  """The id of `known` (ids: a set, a dict's keys, or a `near_index`) that `text` differs from only by
  spelling (see `loose`); None if there is none or `text` is itself known."""
  if text in known:
    return None
  index = known if isinstance(known, NearIndex) else near_index(known)
  return index.get(loose(text))


class NearIndex(dict):
  """{loose form: id} (see near_index); `in` asks about the ids themselves."""

  def __init__(self, ids):
    super().__init__()
    self.ids = set()
    for k in ids:
      self.ids.add(str(k))
      self.setdefault(loose(k), str(k))

  def __contains__(self, text):
    return text in self.ids


def near_index(known) -> NearIndex:
  """The ids `known` indexed by their loose form (for many `near` look-ups)."""
  return NearIndex(known)
