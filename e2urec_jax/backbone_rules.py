"""The config rule of a pretrained backbone (config.pretrain), light enough for config.validate."""
from e2urec_jax.errors import UserError


def check_pretrain(config) -> None:
  """Refuses a config whose backbone would be pretrained on the experiment's own users."""
  d = config.data
  if d.source != 'synthetic' and d.users != 'experiment':
    raise UserError(f"config.pretrain.enabled=True on {d.source}: the backbone is pretrained on held-out users, "
                    f"so the experiment must leave them out: set config.data.users='experiment' "
                    f"(it is {d.users!r})")
  if d.users == 'heldout':
    raise UserError("config.pretrain.enabled=True with config.data.users='heldout': the experiment would run on "
                    "the backbone's own users; use 'experiment' (or 'all' for synthetic data)")
