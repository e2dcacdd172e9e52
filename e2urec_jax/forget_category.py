"""A forget request by category (`forget --categories=USER:CATEGORY`): the user's ratings of the items
of one category, found in the workdir and served as those (user, item) interactions (forget.py).

A category is a genre of the item table as the source spells it, recorded by `prepare` in
data/item_categories.json. The interactions are every one the workdir holds: a sample's target or
shown history item, a rating of the raw copy (synthetic data) that formed no sample.
"""
import os

from e2urec_jax import forget_audit as audit_lib
from e2urec_jax import forget_scrub as scrub
from e2urec_jax.data import idfiles
from e2urec_jax.data.tokens import read_categories
from e2urec_jax.errors import UserError
from e2urec_jax.forget_request import Request


def with_category_pairs(request: Request, frames: dict, key: bytes, audits: dict, workdir: str, *,
                        missing_ok: bool = False) -> Request:
  """A category request with its pairs: each (user, category)'s (user, item) interactions the workdir
  holds (a sample's target or shown history item, a raw record) whose item is of that category.
  The user and the category are compared exactly, as the source spells them; an unknown or misspelt
  one is a UserError naming where it was given (with the id or category it resembles), as is a user
  with no interaction of the category left (unless an earlier request forgot that category of theirs,
  or missing_ok: a resumed request whose records are already scrubbed)."""
  categories = read_categories(os.path.join(workdir, 'data'))
  if categories is None:
    raise UserError(f'{workdir}/data records no item categories (prepared before they were recorded); '
                    'forget --categories needs them: serve the request as --interactions=FILE of its pairs')
  names = sorted({c for cs in categories.values() for c in cs})
  users, items = scrub.known_ids(frames)
  raw_users, raw_pairs = scrub.raw_records(workdir)
  item_key = {int(v): k for k, v in items.items()}
  pairs = []
  for ukey, category in request.categories:
    where = request.where.get((ukey, category), '--categories')
    where = f'{where}: ' if where != '--categories' else ''
    if ukey not in users and ukey not in raw_users:
      if audit_lib.forgotten_by(audits, key, ukey) is not None:
        continue  # the whole user was forgotten before
      raise UserError(f'{where}{audit_lib.unknown_id("user", ukey, [users, raw_users], audits, key)}')
    if category not in names:
      guess = idfiles.near(category, names)
      hint = f'did you mean {idfiles.cut(guess)}? (categories are compared exactly, as the item table spells ' \
          'them)' if guess else f'the categories are {", ".join(names[:20])}{" ..." if len(names) > 20 else ""}'
      raise UserError(f'{where}{idfiles.cut(category)} is not an item category of this run; {hint}')
    held = set()
    if ukey in users:
      uid = int(users[ukey])
      for f in frames.values():
        mine = f['user'].to_numpy() == uid
        held.update(int(i) for i in f.loc[mine, 'item'])
        for history in f.loc[mine, 'history_items']:
          held.update(int(i) for i in history)
    found = [(ukey, item_key[i]) for i in sorted(held) if i in item_key and category in categories.get(i, ())]
    found += [(u, i) for u, i in raw_pairs
              if u == ukey and i.isascii() and i.isdigit() and category in categories.get(int(i), ())]
    if not found and not missing_ok and audit_lib.category_forgotten_by(audits, key, ukey, category) is None:
      raise UserError(f'{where}user {idfiles.cut(ukey)} has no rating of an item of category {idfiles.cut(category)} '
                      'in this workdir (no sample, no raw record); nothing to forget')
    pairs += found
  return request.with_pairs(pairs)
