"""The package's layers: data -> models -> train -> methods | eval -> the command layer, nothing upward.

Every import of an e2urec_jax module is read from the source (at module level or inside a
function, which is where the package defers heavy imports), so a deferred import cannot hide
a cycle either. `methods` and `eval` are peers that never import each other: what both need
(inference, the run context) lives in `train`.
"""
import ast
import os

from conftest import REPO

PACKAGE = os.path.join(REPO, 'e2urec_jax')
BASE = 0  # errors, rules, seeds, local_files, storage, runtime, distributed, losses, stamps, scoring, names: anywhere
LAYERS = {'data': 1, 'models': 2, 'train': 3, 'methods': 4, 'eval': 4}
FACE = 5  # config, commands, experiment, forget, forget_scrub, bench, main: nothing imports them
BASE_MODULES = ('errors', 'rules', 'seeds', 'local_files', 'storage', 'runtime', 'distributed', 'losses', 'stamps',
                'scoring', 'names')


def _layer(module: str) -> tuple[int, str]:
  """(layer, group) of a dotted e2urec_jax module name."""
  parts = module.split('.')
  if len(parts) == 1:
    return FACE, 'e2urec_jax'
  top = parts[1]
  if top in LAYERS:
    return LAYERS[top], top
  if top in BASE_MODULES:
    return BASE, top
  return FACE, top


def _imports(path: str, module: str):
  """The e2urec_jax modules `path` imports (line, name), resolving `from e2urec_jax.x import y`."""
  tree = ast.parse(open(path).read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith('e2urec_jax'):
          yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('e2urec_jax'):
      for alias in node.names:
        sub = f'{node.module}.{alias.name}'
        yield node.lineno, sub if os.path.exists(_source(sub)) else node.module


def _source(module: str) -> str:
  rel = module.split('.')[1:]
  path = os.path.join(PACKAGE, *rel)
  return path + '.py' if os.path.exists(path + '.py') else os.path.join(path, '__init__.py')


def _modules():
  for root, _, files in os.walk(PACKAGE):
    for f in sorted(files):
      if f.endswith('.py'):
        path = os.path.join(root, f)
        rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, '.')
        yield path, rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def test_no_module_imports_a_layer_above_its_own():
  problems = []
  for path, module in _modules():
    layer, group = _layer(module)
    for line, imported in _imports(path, module):
      other, other_group = _layer(imported)
      peers = layer == other == LAYERS['methods'] and group != other_group
      if other > layer or peers:
        problems.append(f'{os.path.relpath(path, REPO)}:{line} ({group}) imports {imported} ({other_group})')
  assert not problems, '\n'.join(problems)


def test_the_walk_sees_the_layers():
  """The test above is not vacuous: it knows every package and finds the imports it checks."""
  groups = {_layer(m)[1] for _, m in _modules()}
  assert set(LAYERS) <= groups and set(BASE_MODULES) <= groups
  found = {imported for path, module in _modules() for _, imported in _imports(path, module)}
  assert 'e2urec_jax.train.inference' in found and 'e2urec_jax.methods.spec' in found


# Why an import may sit inside a function rather than at the top of its module (its trailing comment):
DEFERRED_REASONS = ('# heavy:', '# no JAX in config', '# private JAX API')


def test_every_deferred_import_says_why():
  """Imports sit at the top of their module; one inside a function (or a try) stays there for a reason its
  trailing comment names: a heavy library a command may not need (`# heavy: matplotlib`), a module that
  loads JAX read by the config, which loads none (`# no JAX in config`), or a private JAX API tried first."""
  problems = []
  for path, _ in _modules():
    source = open(path).read()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source, path)):
      if isinstance(node, (ast.Import, ast.ImportFrom)) and node.col_offset > 0:
        text = lines[node.end_lineno - 1]
        comment = text[text.index('#'):] if '#' in text else ''
        if not comment.startswith(DEFERRED_REASONS):
          problems.append(f'{os.path.relpath(path, REPO)}:{node.lineno} {lines[node.lineno - 1].strip()}')
  assert not problems, ('imports inside a function: move them to the top of the module, or say why they stay '
                        f'({", ".join(DEFERRED_REASONS)} ...):\n' + '\n'.join(problems))


def test_only_main_reads_flags():
  """Commands take explicit arguments: absl flags are read in main.py alone."""
  readers = [os.path.relpath(path, REPO) for path, _ in _modules() if 'flags.FLAGS' in open(path).read()]
  assert readers == ['e2urec_jax/main.py']


def test_no_module_reads_the_fault_injection_variables():
  """Fault injection is a callback the tests pass in (tests/fault_hooks.py), not the environment."""
  assert not [path for path, _ in _modules() if 'E2UREC_TEST_' in open(path).read()]


def _marked_slow(decorators) -> bool:
  return any('slow' in ast.unparse(d) for d in decorators)


def test_only_slow_tests_that_compare_with_pytorch_import_it():
  """PyTorch (torch, peft, tests/models_testlib.py) is imported inside slow tests only, never at a test
  module's top, so the fast tier's own code never loads it. (transformers 5 itself loads torch, when
  installed, with its config classes; that is not ours to avoid.)"""
  torch_modules = ('torch', 'peft', 'models_testlib')
  problems = []
  for name in sorted(os.listdir(os.path.join(REPO, 'tests'))):
    if not name.endswith('.py') or name == 'models_testlib.py':
      continue
    path = os.path.join(REPO, 'tests', name)
    tree = ast.parse(open(path).read(), path)
    module_slow = any(isinstance(n, ast.Assign) and any(getattr(t, 'id', '') == 'pytestmark' for t in n.targets)
                      and 'slow' in ast.unparse(n.value) for n in tree.body)

    def imports_torch(node):
      names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or '']
      return any(n.split('.')[0] in torch_modules for n in names)

    for node in tree.body:
      if isinstance(node, (ast.Import, ast.ImportFrom)) and imports_torch(node):
        problems.append(f'tests/{name}:{node.lineno} imports PyTorch at the top of the module')
      is_test = isinstance(node, ast.FunctionDef) and (node.name.startswith('test') or any(
          'fixture' in ast.unparse(d) for d in node.decorator_list))  # helpers run only when a test calls them
      if is_test:
        uses = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)) and imports_torch(n)]
        if uses and not (module_slow or _marked_slow(node.decorator_list)):
          problems.append(f'tests/{name}:{uses[0].lineno} {node.name} imports PyTorch but is not marked slow')
  assert not problems, '\n'.join(problems)
