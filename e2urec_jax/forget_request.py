"""A forget request as given: --users (ids inline or a file) or --interactions (user_id,item_id pairs), parsed.

Ids are spelled as in the source data; each keeps where it was given ('F line 3') for the errors
that name it. forget.py finds the request's records in the workdir; forget_audit.py checks ids
against the audits' keyed hashes.
"""
import dataclasses

from e2urec_jax.data import idfiles
from e2urec_jax.errors import UserError


@dataclasses.dataclass
class Request:
  kind: str  # 'users' | 'interactions'
  users: list  # user ids as the source spells them (sorted, unique)
  pairs: list  # (user id, item id) as the source spells them; interactions only
  where: dict = dataclasses.field(default_factory=dict)  # id or (user, item) -> where it was given ('F line 3')


def read_request(users: str | None, interactions: str | None) -> Request:
  if users is not None and interactions is not None:
    raise UserError('pass either --users or --interactions, not both (one request at a time)')
  if interactions is not None:
    rows = idfiles.read_pairs(interactions, '--interactions')
    pairs = sorted({(u, i) for u, i, _ in rows})
    where = {}
    for u, i, n in rows:
      where.setdefault((u, i), f'{interactions} line {n}')
    return Request('interactions', sorted({u for u, _ in pairs}), pairs, where)
  if users is None:
    raise UserError('forget needs --users=IDS_OR_FILE (whole users) or --interactions=FILE (user_id,item_id pairs)')
  given = idfiles.read_user_ids(users)
  where = {}
  for u, w in given:
    where.setdefault(u, w)
  return Request('users', sorted(where), [], where)
