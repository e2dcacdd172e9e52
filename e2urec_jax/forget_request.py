"""A forget request as given: --users (ids inline or a file), --interactions (user_id,item_id pairs) or
--categories (a user's ratings of one item category: USER:CATEGORY inline, or user_id,category lines), parsed.

Ids are spelled as in the source data; each keeps where it was given ('F line 3') for the errors
that name it. forget.py finds the request's records in the workdir; forget_audit.py checks ids
against the audits' keyed hashes.
"""
import dataclasses

from e2urec_jax.data import idfiles
from e2urec_jax.errors import UserError


KINDS = ('users', 'interactions', 'category')
FLAGS = '--users, --interactions or --categories'


@dataclasses.dataclass
class Request:
  kind: str  # 'users' | 'interactions' | 'category'
  users: list  # user ids as the source spells them (sorted, unique)
  pairs: list  # (user id, item id) as the source spells them; interactions, and a category request resolved
  where: dict = dataclasses.field(default_factory=dict)  # id, (user, item) or (user, category) -> where given
  categories: list = dataclasses.field(default_factory=list)  # (user id, category) as given; category only

  def given(self) -> tuple:
    """What identifies the request as given (not as resolved): its keyed hash's parts."""
    if self.kind == 'category':
      return (self.kind, *self.users, *[f'{u}\x00{c}' for u, c in self.categories])
    return (self.kind, *self.users, *[f'{u},{i}' for u, i in self.pairs])

  def with_pairs(self, pairs) -> 'Request':
    """A category request resolved to its (user, item) pairs."""
    return dataclasses.replace(self, pairs=sorted(set(pairs)))


def read_request(users: str | None, interactions: str | None, categories: str | None = None) -> Request:
  given = [flag for flag, v in (('--users', users), ('--interactions', interactions), ('--categories', categories))
           if v is not None]
  if len(given) > 1:
    raise UserError(f'pass one of {FLAGS}, not both {" and ".join(given)} (one request at a time)')
  if categories is not None:
    rows = idfiles.read_user_categories(categories)
    where = {}
    for u, c, w in rows:
      where.setdefault((u, c), w)
    return Request('category', sorted({u for u, _, _ in rows}), [], where, sorted(where))
  if interactions is not None:
    rows = idfiles.read_pairs(interactions, '--interactions')
    pairs = sorted({(u, i) for u, i, _ in rows})
    where = {}
    for u, i, n in rows:
      where.setdefault((u, i), f'{interactions} line {n}')
    return Request('interactions', sorted({u for u, _ in pairs}), pairs, where)
  if users is None:
    raise UserError('forget needs --users=IDS_OR_FILE (whole users), --interactions=FILE (user_id,item_id pairs) '
                    "or --categories=USER:CATEGORY (a user's ratings of one item category; or a user_id,category "
                    'file)')
  given = idfiles.read_user_ids(users)
  where = {}
  for u, w in given:
    where.setdefault(u, w)
  return Request('users', sorted(where), [], where)
