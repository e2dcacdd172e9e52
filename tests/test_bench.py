"""`bench` prints a table and writes bench.json with the fields the issue names."""
import json
import os
import subprocess
import sys

from conftest import REPO


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
