"""The PyTorch reference benchmark runs end to end and prints a parseable RESULT line."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

# The reference runs in a subprocess: this process only checks that its packages exist.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ('torch', 'peft', 'transformers')),
    reason='the PyTorch reference needs torch, peft and transformers')]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'benchmarks', 'torch_reference.py')


def test_tiny_reference_prints_result(tmp_path):
  out = tmp_path / 'ref.json'
  proc = subprocess.run(
      [sys.executable, SCRIPT, '--size', 'tiny', '--vocab', '512', '--batch', '2', '--seq', '32',
       '--steps', '2', '--warmup', '1', '--device', 'cpu', '--json', str(out)],
      capture_output=True, text=True, timeout=120, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  assert len(lines) == 1, proc.stdout
  result = json.loads(lines[0][len('RESULT '):])
  assert result == json.loads(out.read_text())
  assert result['name'] == 'reference_e2urec_step'
  assert (result['size'], result['batch'], result['seq'], result['vocab']) == ('tiny', 2, 32, 512)
  for key in ('examples_per_s', 'tokens_per_s', 'ms_per_step', 'peak_memory_bytes', 'trainable_params'):
    assert result[key] > 0, key
  # A step processes 2 x batch examples of seq + 3 tokens.
  assert result['tokens_per_s'] == pytest.approx(result['examples_per_s'] * 35)
  assert result['examples_per_s'] == pytest.approx(4 * 1000 / result['ms_per_step'])
  # LoRA r=16 on q and v: 2 encoder self-attn + 2 decoder (self + cross) blocks, 128 -> 16 -> 128.
  assert result['trainable_params'] == 6 * 2 * (128 * 16 + 16 * 128)
  assert result['passes_per_step'] == {'student': 3, 'teacher': 3}
  assert result['final_loss'] == result['final_loss'] and result['final_loss'] > 0  # finite-ish, not NaN
