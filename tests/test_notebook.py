"""notebooks/e2urec_colab.ipynb runs top to bottom (nbclient, CPU) on the shared tiny demo run.

The notebook's `run` cell finds every phase of the `demo_run` workdir finished, so it only
re-evaluates and rewrites the report; the install cell skips (the package is importable here)
and the full-experiment cell stays off.
"""
import os

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
NOTEBOOK = os.path.join(REPO, 'notebooks', 'e2urec_colab.ipynb')


def test_colab_notebook_executes(demo_run, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  _, workdir = demo_run
  monkeypatch.setenv('E2UREC_NOTEBOOK_CONFIG', 'configs/demo.py:test')
  monkeypatch.setenv('E2UREC_NOTEBOOK_WORKDIR', workdir)
  monkeypatch.setenv('E2UREC_NOTEBOOK_FLAGS', '--config.progress=false')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': REPO}}).execute()

  texts, images = [], 0
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if out.get('output_type') == 'error':
        pytest.fail(f'cell failed: {out.get("ename")}: {out.get("evalue")}')
      texts.append(out.get('text', ''))
      data = out.get('data', {})
      texts.extend(str(v) for k, v in data.items() if k.startswith('text/'))
      images += 'image/png' in data
  text = '\n'.join(texts)
  assert 'skipping the install' in text
  assert 'run finished' in text  # the CLI ran (and found every phase done)
  assert '`e2urec`' in text and '`retrain`' in text  # the results table (Markdown)
  assert 'test AUC' in text  # the pandas summary
  assert images == 2  # distance_vs_time.png and test_auc.png
  assert 'skipped (set RUN_FULL_EXPERIMENT' in text
