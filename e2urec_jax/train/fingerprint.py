"""What each phase's computation reads, recorded beside it, so a rerun never mixes two configs.

A phase's fingerprint is a function of the config sections it reads (directly or through the
phases it builds on), the phase's seed and its inputs:

  data        seed, data.*, the tokenizer settings of model.* (name_or_path, tokenizer,
              tokenizer_vocab_size, scratch.family); inputs: the source files' sha256
  pretrained  data's fields + model.*; inputs: the prepared data's digest
  recipe      + train.*             (original, retrain, retrain_seed2, the shard models)
  augmented   recipe + augment.*
  <method>    recipe + the sections its spec reads (E2URec: augment.*) + unlearn.<method>.*
              (a report row's overrides applied) + the settings every method shares
              (unlearn.weight_decay, max_grad_norm; auto* for methods trained by steps, which
              it stops) + phase_seed when the row has its own seed
  lora.*      in the phases that train adapters or build on a model that did: every phase when
              train.mode is 'lora', the augmented model's when augment.mode is, E2URec's always.
              A full-parameter original does not read them, so a LoRA-rank sweep of E2URec
              retrains E2URec only (before, it retrained the original and both retrains).

Never read: eval.*, progress, checkpoint.*, mesh.*, jax_cache_dir, sweep.* (it only names
rows), bench.*: changing them never invalidates a phase. `fields(config, kind, seed=...)` is
the whole rule, so a run of several seeds (each seed's phases in their own folder) records
and checks the same fingerprints with `seed` set per folder.

Each phase folder holds FILE ({'fields', 'inputs', 'sha256'}); the pretrained start holds it
in its own folder, the data in its manifest. `check` compares a stored fingerprint with the
one a command would run with: the same, new (nothing there), changed (the fields that
differ) or legacy (results written before fingerprints existed).
"""
import hashlib
import json
import os

from e2urec_jax import distributed, runtime, storage
from e2urec_jax.data.prepare import FIELDS_ADDED_LATER, FORMAT_VERSION
from e2urec_jax.errors import UserError

FILE = 'fingerprint.json'
DATA, PRETRAINED, RECIPE, AUGMENTED, METHOD = 'data', 'pretrained', 'recipe', 'augmented', 'method'
# Fields added after phases recorded fingerprints, with the value that computes what ran before
# them: left out of a record at that value, so an upgrade retrains nothing.
ADDED_LATER = {'data.profile_zip': False, 'data.users': 'all', 'data.heldout_fraction': 0.3,
               'data.forget_unit': 'user', 'data.forget_interaction_share': 0.5}
TOKENIZER_FIELDS = ('name_or_path', 'tokenizer', 'tokenizer_vocab_size')
# config.unlearn's fields that every method's phase reads (unlearn.method/methods only pick rows).
SHARED_UNLEARN = ('weight_decay', 'max_grad_norm')
AUTO_FIELDS = ('auto', 'auto_every', 'auto_patience')  # read by the methods trained by steps (methods/auto_stop.py)


def _plain(value):
  return json.loads(json.dumps(value, default=runtime.json_default))


def _flat(prefix: str, section) -> dict:
  out = {}
  items = section.items() if hasattr(section, 'items') else []
  for key, value in items:
    if hasattr(value, 'items'):
      out.update(_flat(f'{prefix}{key}.', value))
    else:
      out[prefix + key] = _plain(value)
  return out


def fields(config, kind: str, *, method: str | None = None, section=None, reads=(), seed=None,
           stepped: bool = True, adapters: bool = False) -> dict:
  """The config fields phase `kind` reads, flattened ('train.batch_size': 16, ...).

  method/section/reads: a method phase's name, its config section with the row's overrides
  applied, and the other sections its spec reads; seed: the phase's own seed when it is not
  config.seed (a seed row, or a multi-seed run's per-seed phases); stepped: the method trains
  by steps from the original (retrain-free stopping applies to it); adapters: the method trains
  LoRA adapters (it reads lora.*)."""
  out = {'seed': int(config.seed), 'data_format': FORMAT_VERSION, **_flat('data.', config.data)}
  for field, before in ADDED_LATER.items():
    if out.get(field) == before:
      del out[field]
  out.update({f'model.{k}': _plain(config.model[k]) for k in TOKENIZER_FIELDS})
  out['model.scratch.family'] = config.model.scratch.family
  if kind == DATA:
    return out
  out.update(_flat('model.', config.model))
  if kind == PRETRAINED:
    return out
  if _reads_lora(config, kind, adapters):
    lora = _flat('lora.', config.lora)
    # lora.init_from starts only the phases of lora.init_phases: the others do not read it.
    init = {k: lora.pop(k) for k in ('lora.init_from', 'lora.init_phases') if k in lora}
    starts = set(str(config.lora.get('init_phases', '') or '').replace(' ', '').split(','))
    # The phases of a kind: the recipe's by name, the augmented kind's (named as the kind), a method's.
    if {RECIPE: bool(starts & {'original', 'retrain', 'shards'}), AUGMENTED: AUGMENTED in starts,
        METHOD: method in starts}.get(kind):
      lora.update(init)
    out.update(lora)
  out.update(_flat('train.', config.train))
  if kind == AUGMENTED:
    out.update(_flat('augment.', config.augment))
  elif kind == METHOD:
    for name in reads:
      out.update(_flat(f'{name}.', config[name]))
    out.update(_flat(f'unlearn.{method}.', section if section is not None else config.unlearn[method]))
    shared = SHARED_UNLEARN + (AUTO_FIELDS if stepped else ())
    out.update({f'unlearn.{k}': _plain(config.unlearn[k]) for k in shared if k in config.unlearn})
  elif kind != RECIPE:
    raise ValueError(f'unknown phase kind {kind!r}')
  if seed is not None and int(seed) != int(config.seed):
    out['phase_seed'] = int(seed)
  return out


def _reads_lora(config, kind: str, adapters: bool) -> bool:
  """Whether a phase of `kind` trains adapters, or builds on a model that did."""
  if config.train.mode == 'lora':  # the original (and so everything built on it) is a merged LoRA model
    return True
  return {RECIPE: False, AUGMENTED: config.augment.mode == 'lora', METHOD: adapters}[kind]


def record(fields_: dict, inputs: dict | None = None) -> dict:
  inputs = dict(sorted((inputs or {}).items()))
  body = {'fields': dict(sorted(fields_.items())), 'inputs': inputs}
  return {**body, 'sha256': hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()}


def read(folder: str) -> dict | None:
  path = os.path.join(folder, FILE)
  if not storage.exists(path):
    return None
  try:
    return runtime.read_json(path)
  except ValueError:  # cut short by a crash before it was renamed into place cannot happen; a hand edit can
    return {'fields': {}, 'inputs': {}, 'sha256': 'unreadable'}


def write(folder: str, rec: dict) -> None:
  runtime.write_json(os.path.join(folder, FILE), rec)


def changed_keys(old: dict, new: dict) -> list[str]:
  """The fields (and 'inputs.<name>') whose values differ, sorted."""
  keys = []
  for part, prefix in (('fields', ''), ('inputs', 'inputs.')):
    a, b = old.get(part, {}), new.get(part, {})
    keys += [prefix + k for k in sorted(set(a) | set(b)) if a.get(k, '<absent>') != b.get(k, '<absent>')]
  return keys


def describe(old: dict, new: dict, keys: list[str], limit: int = 4) -> str:
  """'train.batch_size 16 -> 32, lora.r 16 -> 8' (inputs shown by name only)."""
  parts = []
  for key in keys[:limit]:
    if key.startswith('inputs.'):
      parts.append(f'{key} (another content)')
    else:
      unrecorded = _unrecorded_value(key)  # a field recorded only off its default reads as that default
      a, b = (rec.get('fields', {}).get(key, unrecorded) for rec in (old, new))
      parts.append(f'{key} {json.dumps(a)} -> {json.dumps(b)}')
  if len(keys) > limit:
    parts.append(f'and {len(keys) - limit} more')
  return ', '.join(parts)


def _unrecorded_value(key: str):
  """The value a record without `key` stands for: the default of a field added later (left out of
  records at that value: ADDED_LATER, the prepared data's FIELDS_ADDED_LATER), else '<absent>'."""
  defaults = {**{f'data.{k}': v for k, v in FIELDS_ADDED_LATER.items()}, **ADDED_LATER}
  return defaults.get(key, '<absent>')


SAME, NEW, CHANGED, LEGACY = 'same', 'new', 'changed', 'legacy'


def check(stored: dict | None, has_results: bool, want: dict) -> tuple[str, list]:
  """(state, changed keys) of a phase whose stored fingerprint is `stored`."""
  if stored is None:
    return (LEGACY, []) if has_results else (NEW, [])
  if stored.get('sha256') == want['sha256']:
    return SAME, []
  keys = changed_keys(stored, want)
  if not any(k.startswith('lora.') for k in want.get('fields', {})):
    # Recorded before full-parameter phases stopped reading lora.*: those fields never changed
    # what such a phase computed.
    keys = [k for k in keys if not (k.startswith('lora.') and k not in want.get('fields', {}))]
  return (CHANGED, keys) if keys else (SAME, [])


def phase_has_results(phase_dir: str, model_dir: str | None = None) -> bool:
  """Whether a phase folder holds anything a rerun would reuse: done.json, a resume checkpoint, a model."""
  if storage.exists(os.path.join(phase_dir, 'done.json')) or storage.isdir(os.path.join(phase_dir, 'ckpt')):
    return True
  return bool(model_dir) and storage.isdir(model_dir) and bool(storage.listdir(model_dir))


def refusal(workdir: str, changed: dict, legacy: list, old_new: tuple | None = None) -> str:
  """The one line a rerun with other settings prints: the changed fields, the phases, the choices."""
  phases = list(changed) + [p for p in legacy if p not in changed]
  keys = sorted({k for ks in changed.values() for k in ks})
  what = []
  if keys:
    shown = describe(*old_new, keys) if old_new else ', '.join(keys[:6]) + (f' and {len(keys) - 6} more'
                                                                           if len(keys) > 6 else '')
    what.append(f'config changed since these phases ran: {shown}')
  if legacy:
    what.append(f'{", ".join(legacy[:4])}{" ..." if len(legacy) > 4 else ""} written before fingerprints '
                'existed (their config is not recorded)')
  listed = ','.join(phases[:8]) + (',...' if len(phases) > 8 else '')
  return (f'{workdir}: {"; ".join(what)}; phases affected: {listed}. Rerun with --restart=changed to train '
          f'exactly those again (or --restart=PHASE,... naming them), or use a new --workdir')


def claim(workdir: str, name: str, phase_dir: str, model_dir: str | None, rec: dict) -> None:
  """Before phase `name` reuses or resumes anything: refuses (one line) when its folder holds work of
  other settings (or of unrecorded ones); records `rec` when the phase starts afresh."""
  stored = read(phase_dir)
  state, keys = check(stored, phase_has_results(phase_dir, model_dir), rec)
  if state == CHANGED:
    raise UserError(refusal(workdir, {name: keys}, [], (stored, rec)))
  if state == LEGACY:
    raise UserError(refusal(workdir, {}, [name]))
  if state == NEW and distributed.is_primary():
    write(phase_dir, rec)


def of_run(config, digest: str, kind: str, **kw) -> dict:
  """The record of a phase of kind `kind` (fields(...) and the data's digest as its input)."""
  return record(fields(config, kind, **kw), {'data': digest})
