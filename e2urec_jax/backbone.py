"""A backbone the project pretrains itself: the paper's regime without a model hub.

The paper fine-tunes a pretrained T5-base, so its original, retrained and augmented models share
those weights and differ only by what the experiment's data taught them. With no hub to download
one from, the project pretrains its own (config.pretrain): model.scratch trained by the LLMRec
recipe on a population that never appears in the experiment (data.users='heldout': synthetic
data's other draw of users from the same world, or a held-out share of a real data set's users).
The result is a Hugging Face folder (config.json, model.safetensors, its tokenizer) that the
experiment loads through model.name_or_path like any pretrained checkpoint.

It lives under <pretrain.cache_dir>/<fingerprint>/ (`hf/` the checkpoint, `run/` the workdir that
trained it, `backbone.json` its record, written last), keyed by everything its training reads, so
every seed and every run with the same settings reuses it. Its time is reported on a line of its
own and charged to no model of the experiment (the paper's download of T5-base is not either).
"""
import hashlib
import json
import os
import time

from e2urec_jax import distributed, resume, runtime, stamps, storage, workdir_lock
from e2urec_jax.backbone_rules import check_pretrain
from e2urec_jax.config import default_config
from e2urec_jax.data import readers
from e2urec_jax.errors import UserError
from e2urec_jax.eval.export import export_model
from e2urec_jax.methods import llmrec
from e2urec_jax.train import context, fingerprint as fp, paths

RECORD = 'backbone.json'
# What the backbone never reads: the experiment's unlearning, evaluation and bookkeeping. Left at
# the defaults in its own config, so changing them reuses it.
_NOT_READ = ('seeds', 'repeat_methods', 'augment', 'unlearn', 'sweep', 'sequence', 'eval', 'checkpoint', 'lora')


def backbone_config(config):
  """The config that trains the backbone: the experiment's data world, prompt and model, its
  population (data.users='heldout'), a tokenizer trained on that population's prompts, and
  config.pretrain's recipe (full fine-tuning of every weight)."""
  p = config.pretrain
  sub = config.copy_and_resolve_references()
  defaults = default_config()
  for key in _NOT_READ:
    sub[key] = defaults[key]
  sub.pretrain = defaults.pretrain
  sub.seed = int(p.seed)
  sub.data.users = 'heldout'
  sub.data.num_samples = int(p.num_samples)
  sub.data.synthetic.num_users = int(p.num_users)
  sub.data.forget_fraction = defaults.data.forget_fraction  # its forget flags are never used
  sub.data.forget_selection = defaults.data.forget_selection
  sub.model.name_or_path = ''
  sub.model.tokenizer = 'train'
  sub.train.mode = 'full'
  sub.train.learning_rate = float(p.learning_rate)
  sub.train.batch_size = int(p.batch_size)
  sub.train.epochs = int(p.epochs)
  sub.train.max_steps = 0
  sub.train.eval_every = int(p.eval_every)
  sub.train.patience = int(p.patience)
  sub.jax_cache_dir = config.jax_cache_dir
  sub.progress = config.progress
  return sub


def fingerprint(config) -> str:
  """sha256 of what the backbone's training reads (its config's data, model and recipe fields)."""
  sub = backbone_config(config)
  fields = fp.fields(sub, fp.RECIPE)
  for key in ('progress', 'jax_cache_dir'):
    fields.pop(key, None)
  sources = {name: stamps.file_sha256(path) for name, path in sorted(readers.source_files(sub).items())}
  return hashlib.sha256(json.dumps({'fields': fields, 'sources': sources}, sort_keys=True).encode()).hexdigest()


def folder(config, digest: str | None = None) -> str:
  """<pretrain.cache_dir>/<first 16 hex digits of the fingerprint> (`digest`: fingerprint(config), computed)."""
  digest = digest or fingerprint(config)
  return os.path.join(os.path.abspath(os.path.expanduser(config.pretrain.cache_dir)), digest[:16])


def ensure(config) -> dict | None:
  """With config.pretrain.enabled: the backbone, pretrained now or found in the cache; sets
  config.model.name_or_path to it (and model.tokenizer to its own). Returns its record
  ({'path', 'time_s', 'reused', ...}); None when the config pretrains nothing."""
  if not config.pretrain.enabled:
    return None
  check_pretrain(config)
  digest = fingerprint(config)  # hashes the source files: once per call
  root = folder(config, digest)
  hf = os.path.join(root, 'hf')
  given = config.model.name_or_path
  if given and os.path.abspath(os.path.expanduser(given)) != hf:
    raise UserError(f'config.model.name_or_path={given!r} and config.pretrain.enabled=True: the run would start '
                    f'from its own backbone ({hf}); clear model.name_or_path, or set pretrain.enabled=False to '
                    'start from that model')
  record = _reused(root)
  if record is None:
    os.makedirs(root, exist_ok=True)
    # Two runs starting together: the second is refused (naming the first), and reuses it once published.
    with workdir_lock.hold(root, 'pretrain'):
      record = _reused(root) or _pretrain(config, root, digest)  # published while we looked: reuse it
  config.model.name_or_path = hf
  config.model.tokenizer = ''
  return record


def recorded(config) -> dict | None:
  """The cached backbone's record for `config` (reused: True), or None; trains nothing."""
  return _reused(folder(config))


def _reused(root: str) -> dict | None:
  record = _read_record(root)
  return None if record is None else {**record, 'reused': True}


def _read_record(root: str) -> dict | None:
  path = os.path.join(root, RECORD)
  if not os.path.exists(path) or not os.path.exists(os.path.join(root, 'hf', 'config.json')):
    return None
  try:
    return runtime.read_json(path)
  except ValueError:
    return None


def _pretrain(config, root: str, digest: str) -> dict:
  """Trains the backbone in <root>/run (resumable like any run) and publishes <root>/hf, then the record."""
  sub = backbone_config(config)
  run_dir = os.path.join(root, 'run')
  p = config.pretrain
  print(f'backbone: pretraining model.scratch on a population disjoint from the experiment\'s '
        f'({_population(sub)}), {p.epochs} epochs at lr {p.learning_rate:g}, into {root}', flush=True)
  start = time.perf_counter()
  ctx = resume.prepare_run(sub, run_dir, 'train')
  stats = llmrec.ensure_original(ctx)
  hf = os.path.join(root, 'hf')
  if storage.isdir(hf):
    storage.rmtree(hf)  # an export cut short before the record was written
  export_model(context.open_run(sub, paths.run_paths(run_dir), read_only=True), paths.ORIGINAL, hf)
  record = {'path': hf, 'fingerprint': digest, 'time_s': round(time.perf_counter() - start, 2),
            'train_time_s': stats.get('time_s'), 'steps': stats.get('steps'), 'best_valid': stats.get('best_valid'),
            'samples': {s: len(ctx.data.splits[s].label) for s in ('train', 'valid', 'test')},
            'population': _population(sub), 'created_utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            'reused': False}
  runtime.write_json(os.path.join(root, RECORD), record)
  return record


def _population(sub) -> str:
  d = sub.data
  if d.source == 'synthetic':
    return f'{d.synthetic.num_users} synthetic users of world seed {d.synthetic.seed}, another draw'
  return f'the {d.heldout_fraction:g} share of {d.source} users held out of the experiment'


def resolve(config, *, say: bool = False) -> dict | None:
  """ensure(config), printing the backbone's line when `say` or when this call pointed the config
  at it (the first command of a process to need it)."""
  before = config.model.name_or_path
  record = ensure(config)
  if record is not None and (say or config.model.name_or_path != before):
    if distributed.is_primary():
      print(describe(record), flush=True)
  return record


def describe(record: dict) -> str:
  """The first screen's line about the backbone."""
  what = 'reused' if record.get('reused') else 'pretrained'
  return (f'backbone: {what} {record["path"]} ({record.get("population", "")}; pretraining took '
          f'{record["time_s"]:.0f} s, not charged to any model of the experiment)')
