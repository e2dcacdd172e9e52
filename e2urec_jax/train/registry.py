"""The registry of declared methods: `methods/spec.py` declares a method (`MethodSpec`) and
registers it here, and every layer from `train` up reads it.

It lives in `train` so that the evaluation (`eval`, a peer of `methods` that never imports it)
and the published artifacts can ask what a method declared (its helper models, its diagnostic,
its shards) without naming any method. It is filled when `e2urec_jax.methods` is imported,
which every command does before it trains or scores anything. Nothing heavy is imported here:
the CLI reads the registry before JAX is loaded.
"""
_SPECS: dict = {}


def register(spec):
  """Adds `spec` (in report order: the order of registration); returns it."""
  if spec.name in _SPECS and _SPECS[spec.name] is not spec:
    raise ValueError(f'a method named {spec.name!r} is registered already')
  missing = sorted(set(spec.defaults) - set(spec.field_rules()))
  if missing:
    raise ValueError(f'method {spec.name!r}: no rule for config field(s) {", ".join(missing)}')
  if spec.same_as is not None and spec.same_as not in _SPECS:
    raise ValueError(f'method {spec.name!r}: same_as={spec.same_as!r} is not registered (register it first)')
  other = featured()
  if spec.featured and other not in (None, spec.name):
    raise ValueError(f'method {spec.name!r}: featured, but {other!r} is featured already (one method is)')
  _SPECS[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  """Removes a method (tests that register their own)."""
  _SPECS.pop(name, None)


def get(name: str):
  return _SPECS[name]


def find(name: str):
  """The spec of `name`, or None."""
  return _SPECS.get(name)


def names() -> tuple:
  """Every registered method, in report order."""
  return tuple(_SPECS)


def specs() -> tuple:
  return tuple(_SPECS.values())


def default_methods() -> tuple:
  """The methods `run` executes when config.unlearn.methods is not set (diagnostics left out)."""
  return tuple(s.name for s in _SPECS.values() if s.in_default)


def chainable() -> tuple:
  """Methods `forget` can serve."""
  return tuple(s.name for s in _SPECS.values() if s.chainable)


def report_order() -> tuple:
  """Rows of the report in order: the original, the retrained reference, then the methods."""
  return ('original', 'retrain') + names()


def helpers() -> tuple:
  """Every helper model a registered method declares (MethodSpec.helpers), each name once."""
  out = {}
  for spec in _SPECS.values():
    for helper in spec.helpers:
      out.setdefault(helper.name, helper)
  return tuple(out.values())


def hidden_models() -> tuple:
  """Model folders that are no report row: the helpers declared hidden."""
  return tuple(h.name for h in helpers() if h.hidden)


def shard_methods() -> tuple:
  """Methods whose models are shards ('<method>/shard<k>' folders)."""
  return tuple(s.name for s in _SPECS.values() if s.trainable == 'shards')


def featured() -> str | None:
  """The method the report is about (MethodSpec.featured: E2URec), or None."""
  return next((s.name for s in _SPECS.values() if s.featured), None)


def is_featured_row(row: str) -> bool:
  """Whether report row `row` ('e2urec', 'e2urec[alpha=4]') is one of the featured method's."""
  spec = method_of_row(row)
  return spec is not None and spec.featured


def method_of_row(row: str):
  """The spec of a report row ('e2urec', 'e2urec[alpha=4]', 'npo[seed=5]'), or None (original, retrain, ...)."""
  return _SPECS.get(row.partition('[')[0])
