"""Before a command trains anything: is the workdir's work reusable under this config?

Every phase records its fingerprint (train/fingerprint.py): the config fields it reads, its
seed, its inputs. A command first lists the phases it runs (`plan`), then, before any work:

1. the data: prepared with these settings and intact (stamps.py)? Corrupt token arrays are
   prepared again (unless forget requests scrubbed them: then the file is named);
2. every phase: same fingerprint (reused), none yet (trained), another one or none recorded
   beside results (refused, one line: the changed fields, the phases, the choices);
3. `restart` (the --restart flag): 'changed' trains exactly the phases whose fingerprint
   differs (or that have none) again; 'all' every phase of the command; PHASE,... those
   phases. A restarted phase takes the phases built on it along (the original takes the
   augmented model and every method; the data and the pretrained start take everything).

A phase whose published model is corrupt is trained again when the command reaches it
(train/runner.done).
"""
import dataclasses
import os
import shutil

from e2urec_jax import distributed, runtime, stamps, storage
from e2urec_jax.data import load_tokenized, readers
from e2urec_jax.data.prepare import config_key, prepare
from e2urec_jax.errors import UserError
from e2urec_jax.methods import llmrec, runner, spec as spec_lib
from e2urec_jax.train import context, fingerprint as fp, paths as paths_lib
from e2urec_jax.train.paths import ORIGINAL, SEEDS_DIR

WORDS = ('changed', 'all')


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  kind: str  # fingerprint kind: pretrained, recipe, augmented, method
  deps: tuple = ()  # phases whose output it reads
  method: str | None = None
  overrides: tuple = ()
  seed: int | None = None


# ------------------------------------------------------------------ which phases a command runs
def plan(config, command: str) -> list[Phase]:
  """The phases `command` runs (and may reuse), upstream first."""
  out = [] if config.model.name_or_path else [Phase('pretrained', fp.PRETRAINED)]
  start = ('pretrained',) if out else ()
  original = Phase(ORIGINAL, fp.RECIPE, start)
  if command == 'prepare':
    return []
  if command in ('train', 'augment'):
    out.append(original)
  if command == 'retrain':
    out.append(Phase(llmrec.RETRAIN, fp.RECIPE, start))
  if command == 'augment':
    out += _helper_phases(augment_helpers(), out)
  if command in ('run', 'unlearn'):
    rows = runner.rows(config) if command == 'run' else [runner.Row(config.unlearn.method, config.unlearn.method)]
    out.append(original)
    if command == 'run':
      out.append(Phase(llmrec.RETRAIN, fp.RECIPE, start))
      if config.eval.noise_floor:
        out.append(Phase(llmrec.NOISE_FLOOR, fp.RECIPE, start))
    out += _helper_phases([h for r in rows for h in spec_lib.get(r.method).helpers], out)
    for row in rows:
      spec = spec_lib.get(row.method)
      if spec.trainable == 'shards':
        shards = [f'{row.name}/shard{k}' for k in range(int(config.data.num_shards))]
        out += [Phase(s, fp.RECIPE, start, seed=row.seed) for s in shards]
        out.append(Phase(row.name, fp.METHOD, tuple(shards), row.method, row.overrides, row.seed))
      else:
        deps = (ORIGINAL,) + tuple(h.name for h in spec.helpers)
        out.append(Phase(row.name, fp.METHOD, deps, row.method, row.overrides, row.seed))
  return out


def augment_helpers() -> list:
  """The helper models the methods declare of the augmented kind (MethodSpec.helpers, fingerprint kind
  'augmented': trained by config.augment), which the `augment` command trains."""
  return [h for h in spec_lib.helpers() if h.kind == fp.AUGMENTED]


def _helper_phases(helpers, planned: list) -> list[Phase]:
  """The phases of the methods' helper models (MethodSpec.helpers) not planned yet (each once; the
  retrained model a method reads is `run`'s own): their deps are those of the planned phases."""
  names = {p.name for p in planned}
  out = []
  for helper in helpers:
    if helper.name in names:
      continue
    names.add(helper.name)
    out.append(Phase(helper.name, helper.kind, tuple(d for d in helper.deps if d in names)))
  return out


def phase_record(config, phase: Phase, digest: str) -> dict:
  """The fingerprint `phase` runs with (the same the phase itself writes: train/runner.done)."""
  if phase.kind == fp.METHOD:
    section = runner.section_of(config, phase.method, phase.overrides)
    fields = runner.method_fields(config, phase.method, section, phase.seed)
  else:
    fields = fp.fields(config, phase.kind, seed=phase.seed)
  return fp.record(fields, {'data': digest})


# ------------------------------------------------------------------ --restart
def parse_restart(text: str | None) -> tuple:
  if text is None or not str(text).strip():
    return ()
  return tuple(t.strip() for t in str(text).split(',') if t.strip())


def _closure(phases: list[Phase], names: set) -> set:
  """`names` and every phase of `phases` built on one of them."""
  out = set(names)
  grew = True
  while grew:
    grew = False
    for p in phases:
      if p.name not in out and any(d in out for d in p.deps):
        out.add(p.name)
        grew = True
  return out


# ------------------------------------------------------------------ the data
def _manifest(workdir: str):
  path = os.path.join(workdir, 'data', 'manifest.json')
  if not storage.exists(path):
    return None
  try:
    return runtime.read_json(path)
  except ValueError:
    return {'corrupt': True}


def data_state(config, workdir: str) -> tuple[str, list, dict | None, dict]:
  """(state, changed keys, stored record, wanted record) of <workdir>/data: its fingerprint is the
  settings `prepare` records in the manifest (data.prepare.config_key) and its source files' sha256."""
  want = {'fields': _flat_key(config_key(config)), 'inputs': {}}
  manifest = _manifest(workdir)
  if manifest is None or manifest.get('corrupt'):
    return fp.NEW, [], None, want
  stored = {'fields': _flat_key(manifest.get('config', {})), 'inputs': {}}
  keys = fp.changed_keys(stored, want)
  state = fp.CHANGED if keys else fp.SAME
  hashes = manifest.get('source_sha256') or {}
  for name, path in readers.source_files(config).items():  # a source file edited since it was prepared
    if name in hashes and os.path.exists(path) and stamps.file_sha256(path) != hashes[name]:
      keys.append(f'inputs.{name}')
      state = fp.CHANGED
  return state, keys, stored, want


def _flat_key(key: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in key.items():
    if isinstance(v, dict):
      out.update(_flat_key(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def _remove(paths) -> None:
  for path in paths:
    if storage.isdir(path):
      storage.rmtree(path)
    elif storage.exists(path):
      storage.remove(path)


def _wipe_trained(workdir: str) -> None:
  """Everything built on the data: the pretrained start, every phase and model, the report."""
  _remove([os.path.join(workdir, p) for p in ('pretrained', 'phases', 'models', SEEDS_DIR, 'results.json',
                                              'results.md')])


def ensure_data(config, workdir: str, restart=(), *, say_reused: bool = False):
  """The run's data: prepared if missing, refused if prepared with other settings (unless restarted),
  prepared again if its files are corrupt and it was never scrubbed. Returns TokenizedData.
  say_reused: print one line when the data was already there and nothing was done (`prepare`)."""
  state, keys, stored, want = data_state(config, workdir)
  if state == fp.CHANGED:
    if not ({'data', 'all'} & set(restart) or 'changed' in restart):
      raise UserError(fp.refusal(workdir, {'data': keys}, [], (stored, want)) + ' (restarting the data trains '
                      'every phase again)')
    _check_not_scrubbed(workdir, 'prepare it again with other settings')
    _prepare_again(config, workdir, fp.describe(stored, want, keys))
  restarted = state == fp.SAME and bool({'data', 'all'} & set(restart))
  if restarted:
    _check_not_scrubbed(workdir, 'prepare it again')
    _prepare_again(config, workdir, '--restart')
  reused = state == fp.SAME and not restarted
  manifest_path = os.path.join(workdir, 'data', 'manifest.json')
  distributed.primary_first('prepare', lambda: storage.exists(manifest_path), lambda: prepare(config, workdir))
  try:
    data = load_tokenized(workdir)
    if reused and say_reused and distributed.is_primary():
      sizes = ' / '.join(f'{split} {len(data.splits[split].label)}' for split in ('train', 'valid', 'test'))
      print(f'prepare: {workdir}/data is already prepared with these settings ({sizes} samples); nothing to do '
            '(--restart=data prepares it again)')
    return data
  except stamps.Corrupt as e:
    _check_not_scrubbed(workdir, 'prepare it again', corrupt=str(e))
    old = (_manifest(workdir) or {}).get('digest')
    if distributed.is_primary():
      print(f'repair: {e.path} is corrupt; preparing the data again')
      _remove([os.path.join(workdir, 'data')])
    distributed.barrier('repair-data')
    distributed.primary_first('prepare-again', lambda: storage.exists(manifest_path),
                              lambda: prepare(config, workdir))
    data = load_tokenized(workdir)
    if old and data.digest != old and distributed.is_primary():
      print('note: the data prepared again differs from the one the phases were trained on')
    return data


def _prepare_again(config, workdir: str, why: str) -> None:
  """Prepares the data again (a --restart): the old data stays in place until the new one is
  complete (a failing preparation, a malformed file say, leaves the workdir as it was); then
  everything trained on the old data goes."""
  if distributed.is_primary():
    print(f'restart: preparing the data again ({why}); every phase is trained again')
    data_dir, aside = os.path.join(workdir, 'data'), os.path.join(workdir, '.data.replaced')
    local = not storage.is_remote(workdir)
    if local and os.path.isdir(data_dir):
      shutil.rmtree(aside, ignore_errors=True)
      os.replace(data_dir, aside)
    else:
      _remove([data_dir])
    try:
      prepare(config, workdir)
    except BaseException:
      if local and os.path.isdir(aside) and not os.path.exists(data_dir):
        os.replace(aside, data_dir)
      raise
    if local:
      shutil.rmtree(aside, ignore_errors=True)
    _wipe_trained(workdir)
  distributed.barrier('restart-data')


def _check_not_scrubbed(workdir: str, what: str, corrupt: str = '') -> None:
  manifest = _manifest(workdir) or {}
  if int(manifest.get('scrubbed', 0) or 0) > 0:
    lead = f'{corrupt.rstrip(".")}; but ' if corrupt else ''
    raise UserError(f'{lead}{workdir}/data was scrubbed by forget requests: preparing it again from the source '
                    f'would bring the forgotten records back, so `run` will not {what}; restore '
                    f'{workdir}/data from a backup, or use a new --workdir')


# ------------------------------------------------------------------ the phases
def _dirs(paths, phase: Phase) -> tuple[str, str]:
  if phase.name == 'pretrained':
    return paths.pretrained, paths.pretrained
  return paths.phase_dir(phase.name), paths.model_dir(phase.name)


def phase_states(config, paths, phases: list[Phase], digest: str) -> dict:
  """name -> (state, changed keys, stored record, wanted record)."""
  out = {}
  for phase in phases:
    want = phase_record(config, phase, digest)
    phase_dir, model_dir = _dirs(paths, phase)
    stored = fp.read(phase_dir)
    has = (storage.exists(os.path.join(model_dir, 'config.json')) if phase.name == 'pretrained'
           else fp.phase_has_results(phase_dir, model_dir))
    state, keys = fp.check(stored, has, want)
    out[phase.name] = (state, keys, stored, want)
  return out


def check_phases(config, paths, phases: list[Phase], digest: str, restart=()) -> None:
  """Refuses (one line) when a phase of `phases` was trained with other settings, unless `restart`
  covers it; deletes the restarted phases (and those built on them)."""
  names = {p.name for p in phases}
  unknown = [r for r in restart if r not in names | set(WORDS) | {'data'}]
  if unknown:
    raise UserError(f'--restart={",".join(restart)}: {unknown[0]!r} is not a phase of this command; '
                    f'choose from {", ".join(WORDS)}, data, {", ".join(p.name for p in phases)}')
  states = phase_states(config, paths, phases, digest)
  stale = [p.name for p in phases if states[p.name][0] in (fp.CHANGED, fp.LEGACY)]
  if 'all' in restart:
    chosen = set(names)
  else:
    chosen = set(r for r in restart if r in names) | (set(stale) if 'changed' in restart else set())
  chosen = _closure(phases, chosen)
  refused = [n for n in stale if n not in chosen]
  if refused:
    changed = {n: states[n][1] for n in refused if states[n][0] == fp.CHANGED}
    legacy = [n for n in refused if states[n][0] == fp.LEGACY]
    first = next(iter(changed), None)
    raise UserError(fp.refusal(paths.workdir, changed, legacy, states[first][2:] if first else None))
  doomed = [p for p in phases if p.name in chosen and (states[p.name][0] != fp.NEW or
                                                       storage.exists(_dirs(paths, p)[0]))]
  if doomed and distributed.is_primary():
    print(f'restart: training {", ".join(p.name for p in doomed)} again')
    for phase in doomed:
      phase_dir, model_dir = _dirs(paths, phase)
      _remove([phase_dir, model_dir])
  distributed.barrier('restart-phases')


def as_restart(restart) -> tuple:
  """--restart's words as given: the flag's text (or None), or words already split."""
  return parse_restart(restart) if isinstance(restart, str) or restart is None else tuple(restart)


def prepare_run(config, workdir: str, command: str, restart=()):
  """What every training command does before it trains: data, fingerprints, restarts; returns the
  run context (train/context.py) over the checked workdir. With config.pretrain the caller has
  pointed model.name_or_path at the backbone first (backbone.resolve: the start every phase
  loads; the backbone is itself trained through here, so it sits above this module)."""
  restart = as_restart(restart)
  paths = paths_lib.run_paths(workdir)
  runtime.ensure_writable_dir(paths.workdir)
  data = ensure_data(config, paths.workdir, restart)
  context.fit_batch_sizes(config, data)  # before the fingerprints: they record the sizes the phases use
  phases = plan(config, command)
  check_phases(config, paths, phases, data.digest, restart)
  if distributed.is_primary():
    runtime.save_config(paths.workdir, config)  # later commands default to the config the phases now have
  return context.open_run(config, paths, data=data)


def check_seed(config, paths, data, restart=()) -> None:
  """check_phases for one more seed of a multi-seed `run` (its own folders, its forget set's
  data), done for every seed before any training: a seed trained with other settings is
  refused, or restarted as `restart` says, like the first."""
  check_phases(config, paths, plan(config, 'run'), data.digest, as_restart(restart))


def check_models(config, workdir: str, names: list[str]) -> None:
  """For a command that reads models (evaluate): refuses when one was trained with other settings."""
  paths = paths_lib.run_paths(workdir)
  everything = {p.name: p for p in plan(config, 'run')}
  phases = [everything[n] for n in names if n in everything]
  state, keys, stored, want = data_state(config, paths.workdir)
  if state == fp.CHANGED:
    raise UserError(fp.refusal(paths.workdir, {'data': keys}, [], (stored, want)).replace(
        'Rerun with', 'Evaluate with the config they were trained with (omit --config: the workdir\'s '
        'config.json), rerun `run` with'))
  digest = load_tokenized(paths.workdir).digest
  states = phase_states(config, paths, phases, digest)
  changed = {n: s[1] for n, s in states.items() if s[0] == fp.CHANGED}
  legacy = [n for n, s in states.items() if s[0] == fp.LEGACY]
  if changed or legacy:
    first = next(iter(changed), None)
    line = fp.refusal(paths.workdir, changed, legacy, states[first][2:] if first else None)
    raise UserError(line.replace('Rerun with', "Evaluate with the config they were trained with (omit --config: "
                                 "the workdir's config.json), or rerun `run` with"))
