"""`bench` prints a table and writes bench.json with the fields the issue names."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_writes_json_with_reference(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'e2urec_jax', 'bench',
       '--config=configs/bench.py:size=tiny,batch=4,seq=32,steps=1,warmup=1,vocab=512,reference_steps=1',
       f'--workdir={tmp_path}'], capture_output=True, text=True, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'speedup of e2urec_step' in out.stdout
  result = json.load(open(os.path.join(tmp_path, 'bench.json')))
  names = [r['name'] for r in result['results']]
  assert names[:3] == ['e2urec_step', 'train_step', 'eval']
  for row in result['results']:
    for key in ('size', 'batch', 'seq', 'examples_per_s', 'tokens_per_s', 'ms_per_step', 'compile_s',
                'peak_memory_bytes', 'mfu'):
      assert key in row
    assert row['examples_per_s'] > 0
  assert result['results'][0]['mfu'] is None  # CPU: no MFU
  assert 'reference_e2urec_step' in names and result['speedup_vs_reference'] > 0


def test_bench_config_options_reach_model_and_bench():
  sys.path.insert(0, REPO)
  from configs import bench as bench_config
  c = bench_config.get_config('size=llama135m,batch=64,remat=true,dropout=0.0,what=e2urec_step+eval')
  assert (c.bench.size, c.bench.batch, c.bench.what) == ('llama135m', 64, 'e2urec_step+eval')
  assert c.model.remat is True and c.model.dropout == 0.0
  assert bench_config.get_config('').model.dropout == 0.1  # training-mode dropout by default
  try:
    bench_config.get_config('sizee=base')
  except ValueError as e:
    assert "unknown option 'sizee'" in str(e) and 'remat' in str(e)
  else:
    raise AssertionError('a misspelt option must fail')


def test_device_time_summary_ranks_ops_of_a_gpu_trace(tmp_path):
  from jax.profiler import ProfileData
  from e2urec_jax.bench import device_time_summary
  # Two steps on one GPU stream: gemm 3 ms + 3 ms, fusion 1 ms + 1 ms; a host plane is ignored.
  events = ''.join(f'events {{ metadata_id: {m} offset_ps: {o} duration_ps: {d} }} '
                   for m, o, d in ((1, 0, 3 * 10**9), (2, 4 * 10**9, 10**9), (1, 6 * 10**9, 3 * 10**9), (2, 10**10, 10**9)))
  text = ('planes { name: "/host:CPU" lines { name: "python" events { metadata_id: 1 duration_ps: 9000000000 } } '
          'event_metadata { key: 1 value { id: 1 name: "host_op" } } } '
          f'planes {{ name: "/device:GPU:0" lines {{ name: "Stream #14" {events}}} '
          'event_metadata { key: 1 value { id: 1 name: "gemm_fusion" } } '
          'event_metadata { key: 2 value { id: 2 name: "loop_select_fusion" } } }')
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'vm.xplane.pb').write_bytes(ProfileData.text_proto_to_serialized_xspace(text))
  summary = device_time_summary(str(tmp_path), steps=2).splitlines()
  assert summary[0] == '/device:GPU:0: ms per step by profiler line'
  assert summary[1].split() == ['4.00', 'Stream', '#14']  # (3 + 1) ms per step
  assert summary[3].split() == ['3.000', '75.0%', 'gemm_fusion']
  assert summary[4].split() == ['1.000', '25.0%', 'loop_select_fusion']
  assert 'host_op' not in '\n'.join(summary)


def test_cpu_flags_only_where_measured(monkeypatch):
  import importlib.metadata
  import importlib.util
  from e2urec_jax import distributed
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.metadata, 'version', lambda name: '0.10.2')
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None if name in (
      'jax_plugins', 'jax_cuda12_plugin', 'jax_cuda13_plugin', 'libtpu') else real_find_spec(name))
  assert distributed.measured_cpu_build()
  monkeypatch.setattr(importlib.metadata, 'version', lambda name: '0.11.2')  # a newer XLA may lack the flag
  assert not distributed.measured_cpu_build()
  monkeypatch.setattr(importlib.metadata, 'version', lambda name: '0.10.2')
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: object() if name == 'jax_plugins' else None)
  assert not distributed.measured_cpu_build()  # a GPU plugin is installed
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert distributed.measured_cpu_build()
