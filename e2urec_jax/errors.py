"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
  """Bad input or a state the user can fix; the message names the thing and the fix."""
