"""Everything a phase needs, built once per process: data, model, mesh, compiled steps.

Compiled steps are cached here by what they compute, so methods that share a step
(retrain and the original; NegGrad, Bad-T and GA) compile it once per process, and the
persistent XLA cache makes the next process start warm.

Placement: `put` replicates (trainable trees, optimizer state, small things); `put_frozen`
shards frozen weights over the mesh's 'model' axis (FSDP-style, c.mesh.model_axis), and
`base_dtype` already returns the frozen base placed that way when that axis is > 1.
"""
import os
import resource

import jax
import numpy as np

from e2urec_jax import distributed, runtime
from e2urec_jax.errors import UserError
from e2urec_jax.train import artifacts
from e2urec_jax.train import mesh as mesh_lib


def peak_memory_bytes() -> int:
  """Peak device memory where the backend reports it (GPU/TPU), else the process's peak RSS (CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use'])
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Context:

  def __init__(self, config, workdir: str):
    from e2urec_jax.data import load_tokenized
    from e2urec_jax.models import lora
    self.config = config
    self.workdir = runtime.ensure_writable_dir(os.path.abspath(workdir))
    manifest = os.path.join(self.workdir, 'data', 'manifest.json')

    def prepare():
      from e2urec_jax.data.prepare import prepare
      prepare(config, self.workdir)
    distributed.primary_first('prepare', lambda: os.path.exists(manifest), prepare)
    self.data = load_tokenized(self.workdir)
    mesh_cfg = config.get('mesh') or {}
    self.mesh = mesh_lib.make_mesh(model_axis=mesh_cfg.get('model_axis', 1))
    self.num_devices = mesh_lib.num_data_shards(self.mesh)  # rows of a batch must be a multiple of this
    self.pretrained_dir = self._ensure_pretrained()
    from e2urec_jax.models import load_pretrained
    model, params, _ = load_pretrained(self.pretrained_dir, compute_dtype=config.model.dtype,
                                       remat=config.model.remat)
    self._check_vocab(model)
    targets = tuple(t for t in config.lora.targets.split(',') if t) or lora.default_targets(model.family)
    self.lora_targets = targets
    self.lora_meta = {'r': int(config.lora.r), 'alpha': float(config.lora.alpha),
                      'dropout': float(config.lora.dropout), 'targets': list(targets)}
    self.model = lora.configure(model, r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout)
    self.pretrained_params = params
    self.num_base_params = lora.count_params(params)
    self._compiled = {}

  # -------------------------------------------------------------- models
  def _ensure_pretrained(self) -> str:
    """The common start of original and retrain: a hub/local model, or a scratch one saved once."""
    cfg = self.config.model
    if cfg.name_or_path:
      if os.path.isdir(cfg.name_or_path):
        return os.path.abspath(cfg.name_or_path)
      return _snapshot(cfg.name_or_path)
    path = os.path.join(self.workdir, 'pretrained')

    def make():
      from e2urec_jax.models import init_params, model_from_hf_config, scratch_hf_config
      d = self.data
      hf_config = scratch_hf_config(cfg.scratch, vocab_size=d.vocab_size, pad_id=d.pad_id, eos_id=d.eos_id,
                                    bos_id=d.bos_id, dropout=cfg.dropout)
      model = model_from_hf_config(hf_config)
      params = init_params(model, jax.random.key(self.config.seed))
      artifacts.save_full(model, params, path)
    distributed.primary_first('pretrained', lambda: os.path.exists(os.path.join(path, 'config.json')), make)
    return path

  def _check_vocab(self, model):
    vocab = model.arch.vocab_size
    if self.data.vocab_size > vocab:
      raise UserError(f'tokenizer has {self.data.vocab_size} tokens but model {self.pretrained_dir} has '
                      f'vocab_size {vocab}; use the tokenizer that belongs to the model (config.model.tokenizer)')

  def model_dir(self, name: str) -> str:
    return os.path.join(self.workdir, 'models', name)

  def phase_dir(self, name: str) -> str:
    return os.path.join(self.workdir, 'phases', name)

  def base_sha256(self, base_dir: str) -> str:
    return artifacts.content_hash(base_dir)

  def load_params(self, name: str):
    """Full weights of a saved model (cast to the configured base dtype)."""
    path = self.model_dir(name)
    if not os.path.exists(os.path.join(path, 'config.json')):
      raise UserError(f'no model {name!r} in {self.workdir}/models; run its phase first')
    _, params = artifacts.load_full(path)
    return params

  def zero_adapters(self, params):
    from e2urec_jax.models import lora
    adapters = lora.init_adapters(params, jax.random.key(0), self.config.lora.r, self.lora_targets)
    return jax.tree.map(np.zeros_like, adapters)

  def new_adapters(self, params, seed: int):
    from e2urec_jax.models import lora
    return lora.init_adapters(params, jax.random.key(seed), self.config.lora.r, self.lora_targets)

  def base_dtype(self, params):
    """The frozen base as the steps take it: floating leaves in config.model.base_dtype; with a
    'model' mesh axis (c.mesh.model_axis > 1) already FSDP-sharded on the mesh (`put_frozen`),
    so no device ever holds the whole model, and `put` keeps that placement."""
    import jax.numpy as jnp
    dtype = jnp.dtype(self.config.model.base_dtype)
    cast = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
    return self.put_frozen(cast) if mesh_lib.model_axis_size(self.mesh) > 1 else cast

  # -------------------------------------------------------------- steps
  def compiled(self, key, build):
    if key not in self._compiled:
      self._compiled[key] = build()
    return self._compiled[key]

  def put(self, tree):
    """Host values replicated on the mesh; arrays already placed on it (`put_frozen`) stay as they are."""
    return mesh_lib.put_on_mesh(tree, self.mesh)

  def put_frozen(self, tree):
    """Frozen weights (base, teachers, a reference model), FSDP-sharded over 'model' (c.mesh.model_axis)."""
    return mesh_lib.put_frozen(tree, self.mesh)


def _snapshot(repo_id: str) -> str:
  try:
    from huggingface_hub import snapshot_download
    return snapshot_download(repo_id, allow_patterns=['*.json', '*.safetensors', '*.model', '*.txt'])
  except Exception as e:  # offline, unknown repo, gated
    raise UserError(f'cannot fetch model {repo_id!r} from the Hugging Face hub ({type(e).__name__}); '
                    'pass --config.model.name_or_path=<local folder> with config.json and *.safetensors')


_CONTEXTS = {}


def get_context(config, workdir: str) -> Context:
  """One context per (workdir, config) in a process, so `run` shares compiled steps across phases."""
  key = (os.path.abspath(workdir), config.to_json_best_effort())
  if key not in _CONTEXTS:
    _CONTEXTS.clear()
    _CONTEXTS[key] = Context(config, workdir)
  return _CONTEXTS[key]
