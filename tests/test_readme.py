"""The README's first screen: its commands come first, and its tables are printed from recorded runs."""
import json
import os
import re

from conftest import REPO
from e2urec_jax.eval import headline

BLOCK = re.compile(r'<!-- table: (\S+) -->\n(.*?)<!-- /table -->', re.S)


def _readme() -> str:
  return open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()


def test_the_two_commands_are_in_the_first_30_lines():
  head = '\n'.join(_readme().splitlines()[:30])
  assert 'python -m e2urec_jax run --config=configs/demo.py --workdir=runs/demo' in head
  assert 'python3 -m pytest -q tests' in head


def _pages() -> list:
  docs = os.path.join(REPO, 'docs')
  return [os.path.join(REPO, 'README.md')] + [os.path.join(docs, n) for n in sorted(os.listdir(docs)) if n.endswith('.md')]


def test_each_recorded_table_is_what_the_table_command_prints_for_its_run():
  assert BLOCK.findall(_readme()), 'the README has no recorded table'
  blocks = [b for page in _pages() for b in BLOCK.findall(open(page, encoding='utf-8').read())]
  for folders, text in blocks:
    runs = {}
    for folder in folders.split(','):  # several runs: `table --workdir=A,B` pools their seeds
      with open(os.path.join(REPO, folder, 'results.json'), encoding='utf-8') as f:
        runs[folder] = json.load(f)
    results = headline.pool(runs) if len(runs) > 1 else runs[folders]
    assert text.strip() == headline.table(results), f'table of {folders} differs from `table --workdir={folders}`'


def test_no_internal_references_in_the_docs():
  for page in _pages():
    text = open(page, encoding='utf-8').read()
    assert not re.search(r'issue [0-9]', text), page
