"""Several hosts, one mesh: `jax.distributed.initialize()` when the environment asks for it.

Every host runs the same command; after `initialize()` `jax.devices()` lists the devices of
all of them, the mesh spans them (train/mesh.py), each process feeds only its own rows of
every global batch, and one process (process 0) writes the reports.

When `initialize()` joins the processes:

  E2UREC_DISTRIBUTED=0     never (one process, whatever else is set)
  E2UREC_DISTRIBUTED=1     always; arguments from the variables below where set, the rest from
                           JAX's cluster detection (Cloud TPU VM slices, SLURM, Open MPI, Kubernetes).
                           tpu/launch.sh sets it on slices with more than one worker.
  unset                    when a coordinator and more than one process are given below, or
                           on a Cloud TPU slice with more than one worker

  E2UREC_COORDINATOR=host:port   (or JAX_COORDINATOR_ADDRESS) where process 0 listens
  E2UREC_NUM_PROCESSES=N         (or JAX_NUM_PROCESSES)
  E2UREC_PROCESS_ID=i            (or JAX_PROCESS_ID) 0 .. N-1, one per process
  E2UREC_LOCAL_DEVICE_IDS=0,1    (or JAX_LOCAL_DEVICE_IDS) optional: this process's local devices

For example two processes on one GPU machine, one GPU each:

  E2UREC_COORDINATOR=localhost:12345 E2UREC_NUM_PROCESSES=2 E2UREC_PROCESS_ID=0 \\
    CUDA_VISIBLE_DEVICES=0 python -m e2urec_jax run ... &
  E2UREC_COORDINATOR=localhost:12345 E2UREC_NUM_PROCESSES=2 E2UREC_PROCESS_ID=1 \\
    CUDA_VISIBLE_DEVICES=1 python -m e2urec_jax run ...

It must run before anything touches a JAX backend (`jax.devices()`, the first array).
"""
import glob
import importlib.metadata
import importlib.util
import logging
import os
import urllib.request

import jax
from jax.experimental import multihost_utils

from e2urec_jax.errors import UserError

log = logging.getLogger(__name__)


def _env(*names):
  for name in names:
    value = os.environ.get(name, '').strip()
    if value:
      return value
  return None


def _int_env(*names):
  value = _env(*names)
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f'{names[0]}={value!r} is not a whole number')


def _tpu_chips_here() -> bool:
  """Whether this machine has TPU chips (read from the PCI bus: no JAX backend is started)."""
  try:
    from jax._src import hardware_utils  # private JAX API, guarded: what JAX itself uses to find TPUs
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except Exception:
    return bool(glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'))


def _tpu_slice_workers() -> int:
  """Workers (hosts) of the Cloud TPU slice this runs on; 1 off TPU or when it cannot tell."""
  hosts = _env('TPU_PROCESS_ADDRESSES', 'TPU_WORKER_HOSTNAMES')
  if hosts:
    return len(hosts.split(','))
  if os.environ.get('TPU_SKIP_MDS_QUERY') or not _tpu_chips_here():
    return 1
  url = 'http://metadata.google.internal/computeMetadata/v1/instance/attributes/worker-network-endpoints'
  try:  # a Cloud TPU VM lists its slice's workers in the VM metadata
    request = urllib.request.Request(url, headers={'Metadata-Flavor': 'Google'})
    with urllib.request.urlopen(request, timeout=3) as response:
      endpoints = response.read().decode().strip()
  except Exception as e:  # not a Cloud TPU VM: only E2UREC_DISTRIBUTED=1 starts it then
    log.debug('no TPU slice metadata: %s', e)
    return 1
  return max(1, len([w for w in endpoints.split(',') if w.strip()]))


def requested() -> bool:
  """Whether this process should join others (see the module docstring)."""
  flag = _env('E2UREC_DISTRIBUTED')
  if flag is not None:
    if flag not in ('0', '1'):
      raise UserError(f'E2UREC_DISTRIBUTED={flag!r}: use 1 (join the other hosts) or 0 (run alone)')
    return flag == '1'
  count = _int_env('E2UREC_NUM_PROCESSES', 'JAX_NUM_PROCESSES')
  if _env('E2UREC_COORDINATOR', 'JAX_COORDINATOR_ADDRESS') and count is not None:
    return count > 1
  return _tpu_slice_workers() > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids=None, force: bool = False) -> bool:
  """Joins the processes of a multi-host run; True when this process is now one of several.

  Arguments override the environment; `force` skips the `requested()` check (tests).
  Calling it again, or after JAX has joined already, does nothing.
  """
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  if not (force or coordinator_address or requested()):
    return False
  coordinator_address = coordinator_address or _env('E2UREC_COORDINATOR', 'JAX_COORDINATOR_ADDRESS')
  num_processes = num_processes if num_processes is not None else _int_env('E2UREC_NUM_PROCESSES',
                                                                           'JAX_NUM_PROCESSES')
  process_id = process_id if process_id is not None else _int_env('E2UREC_PROCESS_ID', 'JAX_PROCESS_ID')
  if local_device_ids is None:
    ids = _env('E2UREC_LOCAL_DEVICE_IDS', 'JAX_LOCAL_DEVICE_IDS')
    local_device_ids = [int(i) for i in ids.split(',')] if ids else None
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids)
  except (ValueError, RuntimeError) as e:
    raise UserError(f'could not join the other processes (jax.distributed.initialize: {str(e)[:300]}); '
                    'set E2UREC_COORDINATOR=host:port, E2UREC_NUM_PROCESSES and E2UREC_PROCESS_ID, '
                    'or E2UREC_DISTRIBUTED=0 to run alone')
  log.info('process %d of %d, %d local / %d global devices', jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())
  return jax.process_count() > 1


# XLA's CPU scheduler may run a step's independent collectives in a different order on each
# (emulated) CPU device; with a 'model' mesh axis they then wait on each other until XLA aborts
# ("Termination timeout for all reduce RendezvousKey..."). Its plain scheduler keeps them in step.
# Read once, when the backend starts: XLA_FLAGS, not a per-compile option. GPUs/TPUs ignore it.
CPU_MODEL_AXIS_FLAG = '--xla_cpu_enable_concurrency_optimized_scheduler=false'


def add_xla_flag(flag: str) -> None:
  """Appends `flag` to XLA_FLAGS unless it is there (effective only before the backend starts)."""
  flags = os.environ.get('XLA_FLAGS', '')
  if flag.split('=')[0] not in flags:
    os.environ['XLA_FLAGS'] = (flags + ' ' + flag).strip()


def measured_cpu_build() -> bool:
  """True when JAX will run on CPU only, with the jaxlib line our CPU flags were measured on.
  XLA aborts on a flag it does not know, and accelerator or newer builds may have dropped one,
  so CPU tuning flags are only set where they are known to exist and to help."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  accelerator = any(importlib.util.find_spec(m) is not None
                    for m in ('jax_plugins', 'jax_cuda12_plugin', 'jax_cuda13_plugin', 'libtpu'))
  if accelerator and set(filter(None, platforms.split(','))) != {'cpu'}:
    return False
  try:
    return importlib.metadata.version('jaxlib').startswith('0.10.')
  except importlib.metadata.PackageNotFoundError:
    return False


def setup(model_axis: int = 1) -> bool:
  """What the CLI does first, before anything touches a JAX backend: the CPU flag a 'model' mesh
  axis needs (config.mesh.model_axis > 1), then `initialize()`."""
  if int(model_axis) > 1:
    add_xla_flag(CPU_MODEL_AXIS_FLAG)
  return initialize()


def is_primary() -> bool:
  """Process 0: the one that writes reports (and prints them)."""
  return jax.process_index() == 0


_barriers = 0


def barrier(name: str, timeout_s: int = 4 * 3600) -> None:
  """Every process waits here until all have arrived (no-op with one process).

  The coordination service's barrier waits as long as `timeout_s` (process 0 may be preparing
  a data set meanwhile); a device collective is the fallback.
  """
  global _barriers
  if jax.process_count() == 1:
    return
  _barriers += 1  # every process passes the same barriers in the same order: unique, agreed ids
  try:
    from jax._src import distributed as jax_distributed  # private JAX API, guarded
    client = jax_distributed.global_state.client
    client.wait_at_barrier(f'e2urec:{name}:{_barriers}', timeout_in_ms=timeout_s * 1000)
  except (ImportError, AttributeError):
    multihost_utils.sync_global_devices(name)


def primary_first(name: str, is_done, make) -> None:
  """Runs `make()` on process 0, then on any other process that still finds `is_done()` false.

  With a shared workdir (NFS, a mounted bucket) the others find process 0's result and skip;
  with one local disk per host (TPU VM workers) each host makes its own, identical, copy.
  """
  if is_primary() and not is_done():
    make()
  barrier(name)
  if not is_primary() and not is_done():
    make()
