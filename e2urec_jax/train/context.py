"""The run context, made explicit: where things live (`Paths`), the model (`ModelBundle`), the data,
the mesh and the compiled steps, built by plain functions and passed to every phase.

`open_run` composes the pieces for a workdir: prepare the data if needed, make the common
start (a scratch model is built and saved once), load the model. `forget` builds the same
context with other `Paths` (its request's folders and the model it starts from) and its own
forget set. Compiled steps are cached in the context by what they close over, so methods
that share a step compile it once per `run`, and the persistent XLA cache makes the next
process start warm.

Placement: `put` replicates (trainable trees, optimizer state, small things); `put_frozen`
shards frozen weights over the mesh's 'model' axis (FSDP-style, c.mesh.model_axis), and
`base_dtype` already returns the frozen base placed that way when that axis is > 1.
"""
import dataclasses
import os
import resource
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from e2urec_jax import distributed, runtime, seeds, stamps, storage
from e2urec_jax.data import load_tokenized
from e2urec_jax.data.prepare import config_key, prepare
from e2urec_jax.errors import UserError
from e2urec_jax.models import init_params, load_pretrained, lora, model_from_hf_config, model_options, scratch_hf_config
from e2urec_jax.models.peft_format import load_peft_adapters
from e2urec_jax.train import artifacts, fingerprint, mesh as mesh_lib, sampling, steps
from e2urec_jax.train.paths import Paths

def peak_memory_bytes() -> int:
  """Peak device memory where the backend reports it (GPU/TPU), else the process's peak RSS (CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use'])
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ------------------------------------------------------------------ the model
@dataclasses.dataclass(frozen=True)
class ModelBundle:
  """The model every phase of a run trains and evaluates, and its common start."""
  model: Any  # the linen module, LoRA scale and dropout configured
  pretrained_dir: str  # Hugging Face folder of the common start
  pretrained_params: Any  # its parameters
  num_base_params: int
  lora_targets: tuple  # module names that get adapters
  lora_meta: dict  # r, alpha, dropout, targets: recorded with every adapter artifact
  base_dtype: str  # storage dtype of frozen weights (config.model.base_dtype)
  lora_r: int
  init_adapters: Any = None  # adapters read from config.lora.init_from (host arrays), or None
  init_phases: tuple = ()  # the phases (config.lora.init_phases) that start from them


def prepared_data(config, paths: Paths, *, read_only: bool = False):
  """The run's token arrays, prepared first when the workdir has none (process 0 first).

  read_only: never create or prepare anything (evaluate, predict, export): no prepared data
  is a UserError. Data prepared with other settings (data.prepare.config_key) is refused."""
  manifest = os.path.join(paths.workdir, 'data', 'manifest.json')
  if read_only:
    if not storage.exists(manifest):
      raise UserError(f'no prepared data in {paths.workdir}/data: nothing to read; run `run` (or `prepare` and '
                      'the training commands) on this workdir first, or check --workdir')
    data = load_tokenized(paths.workdir)
    _check_data_settings(config, paths.workdir, manifest)
    return data
  workdir = runtime.ensure_writable_dir(paths.workdir)
  if storage.exists(manifest):
    _check_data_settings(config, workdir, manifest)
  distributed.primary_first('prepare', lambda: storage.exists(manifest), lambda: prepare(config, workdir))
  return load_tokenized(workdir)


def fit_batch_sizes(config, data, data_shards: int | None = None) -> None:
  """sampling.fit_batch_sizes on `data`'s splits (data_shards: default every device over
  config.mesh.model_axis), its lines printed by process 0."""
  if data_shards is None:
    data_shards = max(1, jax.device_count() // max(1, int(config.mesh.model_axis)))
  sizes = {name: len(split.label) for name, split in data.splits.items()}
  for line in sampling.fit_batch_sizes(config, sizes, data_shards):
    if distributed.is_primary():
      print(line, flush=True)


def _check_data_settings(config, workdir: str, manifest: str) -> None:
  try:
    stored = runtime.read_json(manifest).get('config')
  except ValueError:
    return  # a damaged manifest: load_tokenized names it
  if stored is not None and stored != config_key(config):
    flat = lambda d, p='': {k2: v2 for k, v in d.items() for k2, v2 in (  # noqa: E731
        flat(v, f'{p}{k}.').items() if isinstance(v, dict) else [(p + k, v)])}
    old, new = {'fields': flat(stored)}, {'fields': flat(config_key(config))}
    keys = fingerprint.changed_keys(old, new)
    raise UserError(fingerprint.refusal(workdir, {'data': keys}, [], (old, new)))


def ensure_pretrained(config, paths: Paths, data, *, read_only: bool = False) -> str:
  """The common start of original and retrain: a hub/local model, or a scratch one saved once.

  A scratch start records its fingerprint (train/fingerprint.py) and stamp: one of other settings
  is refused, a corrupt one built again (the same seed builds the same weights); read_only never builds."""
  cfg = config.model
  if cfg.name_or_path:
    if os.path.isdir(cfg.name_or_path):
      return os.path.abspath(cfg.name_or_path)
    return _snapshot(cfg.name_or_path)
  path = paths.pretrained
  rec = fingerprint.of_run(config, data.digest, fingerprint.PRETRAINED)
  if storage.exists(os.path.join(path, 'config.json')):
    stored = fingerprint.read(path)
    state, keys = fingerprint.check(stored, True, rec)
    if state == fingerprint.CHANGED:
      raise UserError(fingerprint.refusal(paths.workdir, {'pretrained': keys}, [], (stored, rec)))
    if state == fingerprint.LEGACY:
      raise UserError(fingerprint.refusal(paths.workdir, {}, ['pretrained']))
    try:
      artifacts.verify(path)
    except stamps.Corrupt as e:
      if read_only:
        raise
      distributed.barrier('verified-pretrained')
      if distributed.is_primary():
        print(f'repair: {e.path} is corrupt; building the pretrained start again (seed {config.seed})')
        storage.rmtree(path)
      distributed.barrier('repaired-pretrained')
  elif read_only:
    raise UserError(f'no pretrained start in {path}: nothing to read; run `run` on this workdir first')

  def make():
    hf_config = scratch_hf_config(cfg.scratch, vocab_size=data.vocab_size, pad_id=data.pad_id, eos_id=data.eos_id,
                                  bos_id=data.bos_id, dropout=cfg.dropout)
    model = model_from_hf_config(hf_config)
    params = init_params(model, jax.random.key(seeds.derive(config.seed, 'pretrained', 'init')))
    artifacts.save_full(model, params, path, fingerprint=rec)
  distributed.primary_first('pretrained', lambda: storage.exists(os.path.join(path, 'config.json')), make)
  return path


def model_bundle(config, pretrained_dir: str, data) -> ModelBundle:
  """Loads the common start and configures LoRA on it."""
  model, params, _ = load_pretrained(pretrained_dir, compute_dtype=config.model.dtype, **model_options(config.model))
  if data.vocab_size > model.arch.vocab_size:
    raise UserError(f'tokenizer has {data.vocab_size} tokens but model {pretrained_dir} has vocab_size '
                    f'{model.arch.vocab_size}; use the tokenizer that belongs to the model (config.model.tokenizer)')
  targets = lora.parse_targets(config.lora.targets, model.family)
  meta = {'r': int(config.lora.r), 'alpha': float(config.lora.alpha), 'dropout': float(config.lora.dropout),
          'targets': list(targets)}
  init = None
  if config.lora.init_from:  # read (and refused on a rank, shape or target mismatch) before any phase runs
    init = load_peft_adapters(config.lora.init_from, model, params, r=int(config.lora.r),
                              alpha=float(config.lora.alpha), targets=targets)
  return ModelBundle(
      model=lora.configure(model, r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout),
      pretrained_dir=pretrained_dir, pretrained_params=params, num_base_params=lora.count_params(params),
      lora_targets=targets, lora_meta=meta, base_dtype=config.model.base_dtype, lora_r=int(config.lora.r),
      init_adapters=init, init_phases=tuple(t.strip() for t in config.lora.init_phases.split(',') if t.strip()))


def _snapshot(repo_id: str) -> str:
  try:
    from huggingface_hub import snapshot_download  # heavy: huggingface_hub, to download
    return snapshot_download(repo_id, allow_patterns=['*.json', '*.safetensors', '*.model', '*.txt'])
  except Exception as e:  # offline, unknown repo, gated
    raise UserError(f'cannot fetch model {repo_id!r} from the Hugging Face hub ({type(e).__name__}); '
                    'pass --config.model.name_or_path=<local folder> with config.json and *.safetensors')


# ------------------------------------------------------------------ the context
@dataclasses.dataclass
class RunContext:
  """What a phase needs. Build one with `open_run` (or the functions above) and pass it on."""
  config: Any
  paths: Paths
  data: Any  # data.TokenizedData
  bundle: ModelBundle
  mesh: Any
  _compiled: dict = dataclasses.field(default_factory=dict)

  @property
  def model(self):
    return self.bundle.model

  @property
  def num_devices(self) -> int:
    """Rows of a batch must be a multiple of this (the mesh's 'data' axis)."""
    return mesh_lib.num_data_shards(self.mesh)

  @property
  def workdir(self) -> str:
    return self.paths.workdir

  def model_dir(self, name: str) -> str:
    return self.paths.model_dir(name)

  def phase_dir(self, name: str) -> str:
    return self.paths.phase_dir(name)

  # ------------------------------------------------------------ weights
  def load_params(self, name: str):
    """Full weights of a saved model (as stored; `base_dtype` casts a frozen copy)."""
    path = self.model_dir(name)
    if not storage.exists(os.path.join(path, 'config.json')):
      raise UserError(f'no model {name!r} in {os.path.dirname(path)}; run its phase first')
    _, params = artifacts.load_full(path)
    return params

  def zero_adapters(self, params):
    adapters = lora.init_adapters(params, jax.random.key(0), self.bundle.lora_r, self.bundle.lora_targets)
    return jax.tree.map(np.zeros_like, adapters)

  def new_adapters(self, params, seed: int, role: str | None = None):
    """The adapters a LoRA phase starts from: those of config.lora.init_from when `role` (the
    method's name, or 'original', 'retrain', 'shards', 'augmented') is in config.lora.init_phases,
    else fresh ones (A random from `seed`, B zero)."""
    if self.init_from(role):
      return jax.tree.map(np.array, self.bundle.init_adapters)  # a copy per phase
    return lora.init_adapters(params, jax.random.key(seed), self.bundle.lora_r, self.bundle.lora_targets)

  def init_from(self, role: str | None) -> str:
    """config.lora.init_from when phases of `role` start from it, else ''."""
    if role is None or self.bundle.init_adapters is None or role not in self.bundle.init_phases:
      return ''
    return self.config.lora.init_from

  def base_dtype(self, params):
    """The frozen base as the steps take it: floating leaves in config.model.base_dtype; with a
    'model' mesh axis (c.mesh.model_axis > 1) already FSDP-sharded on the mesh (`put_frozen`),
    so no device ever holds the whole model, and `put` keeps that placement."""
    dtype = jnp.dtype(self.bundle.base_dtype)
    cast = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
    return self.put_frozen(cast) if mesh_lib.model_axis_size(self.mesh) > 1 else cast

  def put(self, tree):
    """Host values replicated on the mesh; arrays already placed on it (`put_frozen`) stay as they are."""
    return mesh_lib.put_on_mesh(tree, self.mesh)

  def put_frozen(self, tree):
    """Frozen weights (base, teachers, a reference model), FSDP-sharded over 'model' (c.mesh.model_axis)."""
    return mesh_lib.put_frozen(tree, self.mesh)

  # ------------------------------------------------------------ steps
  def train_step(self, loss_builder, *, max_grad_norm: float | None = None, **static):
    """The compiled train step of loss_builder(model, **static), built once per context, with
    gradients clipped to `max_grad_norm` (0 = no clipping; None = steps.MAX_GRAD_NORM).

    The cache key is what the step closes over: the builder and its keyword arguments (the
    compile-time switches) and the clipping bound, so a new switch can never silently reuse an
    old step."""
    clip = steps.MAX_GRAD_NORM if max_grad_norm is None else float(max_grad_norm)
    key = ('train_step', loss_builder.__module__, loss_builder.__qualname__, tuple(sorted(static.items())), clip)
    return self.compiled(key, lambda: steps.make_train_step(loss_builder(self.model, **static), self.mesh, clip))

  def compiled(self, key, build):
    """build() once per key (evaluation functions, train steps)."""
    if key not in self._compiled:
      self._compiled[key] = build()
    return self._compiled[key]

  def share_compiled(self, other: 'RunContext') -> None:
    """Shares `other`'s compiled steps and evaluation functions, and the builds of either from now on
    (a context of the same model and shapes: another seed's)."""
    self._compiled = other._compiled


def open_run(config, paths: Paths, *, data=None, mesh=None, read_only: bool = False) -> RunContext:
  """The context of a run: its data (prepared if missing, or the given one), model and mesh
  (default: every device, config.mesh.model_axis of them per model group). read_only: the
  data and the pretrained start must exist already (evaluate, predict, export create nothing)."""
  data = prepared_data(config, paths, read_only=read_only) if data is None else data
  mesh = mesh_lib.make_mesh(model_axis=config.mesh.model_axis) if mesh is None else mesh
  fit_batch_sizes(config, data, mesh_lib.num_data_shards(mesh))
  pretrained = ensure_pretrained(config, paths, data, read_only=read_only)
  return RunContext(config=config, paths=paths, data=data, bundle=model_bundle(config, pretrained, data), mesh=mesh)
