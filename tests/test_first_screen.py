"""A normal run's first screen: the project's own lines and progress bars, no library noise.

The main job installs requirements.lock, which has no PyTorch: transformers then used to open
every command with "PyTorch was not found...". The run below hides torch from the import
system the way an install without it looks (find_spec finds nothing), and also runs as the
test environment is (torch installed). Its output is a pipe, as a log file is: bars that last
seconds (tokenising) are left out there and the training bar redraws every LOG_BAR_INTERVAL_S.
`run` opens with a line saying what it trains, on what, and where.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import CACHE, REPO, load_config

# A package that finds no torch: what `pip install -r requirements.lock` gives.
HIDE_TORCH = '''
import importlib.machinery, sys
class _Hide(importlib.machinery.PathFinder):
  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name.split('.')[0] in ('torch', 'functorch', 'torchgen'):
      return None
    return importlib.machinery.PathFinder.find_spec(name, path, target)
sys.meta_path[:] = [_Hide if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
'''
PROGRESS = re.compile(r'^[\w/\[\]=.,-]+( [\w/]+)*:\s+\d+%\|')  # a tqdm bar: "<desc>:  40%|..."
NOISE = re.compile(r'warn|pytorch|torch|tensorflow|deprecat|future|^[IWE]\d{4} |\[transformers\]|advis',
                   re.IGNORECASE)


def _screen(tmp_path, hide_torch: bool) -> str:
  prelude = HIDE_TORCH if hide_torch else ''
  code = prelude + ('\nimport sys\nfrom e2urec_jax.main import run_cli\nsys.argv = ["e2urec_jax"] + sys.argv[1:]\n'
                    'run_cli()\n')
  env = {k: v for k, v in os.environ.items() if not k.startswith(('TRANSFORMERS_', 'DATASETS_'))}
  out = subprocess.run(
      [sys.executable, '-c', code, 'train', '--config=configs/demo.py:test', f'--workdir={tmp_path / "run"}',
       '--config.train.max_steps=3', f'--config.jax_cache_dir={CACHE}'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
  text = out.stdout.decode()  # bytes: text mode would turn a progress bar's '\r' into a line break
  assert out.returncode == 0, text[-2000:]
  return text


@pytest.mark.slow
@pytest.mark.parametrize('hide_torch', [True, False], ids=['without_torch', 'with_torch'])
def test_first_screen_has_no_library_noise(tmp_path, hide_torch):
  text = _screen(tmp_path, hide_torch)
  assert re.match(r'\r*\S', text), f'the output starts with a blank line: {text[:80]!r}'  # '\r': a bar
  lines = [part.strip() for line in text.split('\n') for part in line.split('\r')]
  ours = [line for line in lines if line and not PROGRESS.match(line)]
  noisy = [line for line in ours if NOISE.search(line)]
  assert not noisy, noisy
  assert any(line.startswith('prepared synthetic:') for line in ours[:5]), ours[:5]
  assert ours[-1].startswith('original: 3 steps in'), ours[-3:]
  # In a log (this pipe), library bars of a few seconds are left out and ours redraw sparsely.
  bars = [line for line in lines if PROGRESS.match(line)]
  assert bars and all(line.startswith('original:') for line in bars), bars
  assert len(bars) <= 4, bars  # first draw, final state, close: not one line per step


def test_run_opens_with_what_it_does():
  from e2urec_jax.experiment import opening_line
  config = load_config('configs/demo.py')
  line = opening_line(config, 'runs/demo', ['original', 'retrain', 'e2urec'])
  assert line.startswith('run: synthetic data, a t5 from scratch (2 layers, d_model 64), '), line
  assert line.endswith('; models original, retrain, e2urec; workdir runs/demo (phases already finished there are kept)'), line
  config.model.name_or_path = 'google/t5-small'
  assert 'google/t5-small, ' in opening_line(config, 'w', ['original']), opening_line(config, 'w', ['original'])
