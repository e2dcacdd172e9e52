"""Method names -> modules, and the sweep/ablation/seed rows that `run` expands."""
from e2urec_jax.config import ALL_METHODS
from e2urec_jax.errors import UserError


def _methods():
  from e2urec_jax.methods.badt import unlearn_badt
  from e2urec_jax.methods.e2urec import unlearn_e2urec
  from e2urec_jax.methods.ga import unlearn_ga
  from e2urec_jax.methods.neggrad import unlearn_neggrad
  from e2urec_jax.methods.npo import unlearn_npo
  from e2urec_jax.methods.receraser import unlearn_receraser
  from e2urec_jax.methods.sisa import unlearn_sisa
  return {'e2urec': unlearn_e2urec, 'neggrad': unlearn_neggrad, 'badt': unlearn_badt, 'ga': unlearn_ga,
          'npo': unlearn_npo, 'sisa': unlearn_sisa, 'receraser': unlearn_receraser}


SEEDED = ('e2urec', 'neggrad', 'badt', 'ga', 'npo')  # shard methods take their randomness from the data split


def parse_list(text: str, key: str, kind=str) -> list:
  items = [t.strip() for t in str(text).split(',') if t.strip()]
  try:
    return [kind(t) for t in items]
  except ValueError:
    raise UserError(f'config.{key}: cannot read {text!r} as a comma-separated list of {kind.__name__}')


def check_methods(names: list[str], key: str) -> list[str]:
  for name in names:
    if name not in ALL_METHODS:
      raise UserError(f'config.{key}: unknown method {name!r}; choose from {", ".join(ALL_METHODS)}')
  return names


def rows(config) -> list[tuple[str, str, dict]]:
  """(row name, method, keyword overrides) for every method and sweep row of `run`."""
  methods = check_methods(parse_list(config.unlearn.methods, 'unlearn.methods'), 'unlearn.methods')
  out = [(m, m, {}) for m in methods]
  for a in parse_list(config.sweep.alphas, 'sweep.alphas', float):
    out.append((f'e2urec[alpha={a:g}]', 'e2urec', {'alpha': a}))
  for w in parse_list(config.sweep.ws, 'sweep.ws', float):
    out.append((f'e2urec[w={w:g}]', 'e2urec', {'w': w}))
  for ab in parse_list(config.sweep.ablations, 'sweep.ablations'):
    if ab == 'no_forget_teacher':
      out.append(('e2urec[no_forget_teacher]', 'e2urec', {'use_forget_teacher': False}))
    elif ab == 'no_remember_teacher':
      out.append(('e2urec[no_remember_teacher]', 'e2urec', {'use_remember_teacher': False}))
    else:
      raise UserError(f'config.sweep.ablations: unknown {ab!r}; use no_forget_teacher, no_remember_teacher')
  for seed in parse_list(config.sweep.seeds, 'sweep.seeds', int):
    out += [(f'{m}[seed={seed}]', m, {'seed': seed}) for m in methods if m in SEEDED]
  return out


def run_row(ctx, row: str, method: str, overrides: dict) -> dict:
  return _methods()[method](ctx, name=row, **overrides)


def unlearn_command(config, workdir):
  from e2urec_jax.train.context import get_context
  method = config.unlearn.method
  check_methods([method], 'unlearn.method')
  stats = run_row(get_context(config, workdir), method, method, {})
  print(f'{method}: unlearned in {stats["time_s"]:.1f}s; model in {workdir}/models/{method}')
