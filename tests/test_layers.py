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


def _import_graph() -> dict:
  """module -> {imported module: line of its first import}, every e2urec_jax module, deferred imports included."""
  graph = {module: {} for _, module in _modules()}
  for path, module in _modules():
    for line, imported in _imports(path, module):
      if imported in graph and imported != module:
        graph[module].setdefault(imported, line)
  return graph


def _cycles(graph: dict) -> list[list[str]]:
  """One cycle (a list of modules, first repeated last) through each strongly connected component of
  more than one module (Tarjan's algorithm, iterative; a component is read in sorted order)."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = len(index)
    stack.append(root)
    on_stack.add(root)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = len(index)
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph[child]))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = set()
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.add(member)
          if member == node:
            break
        if len(component) > 1:
          components.append(component)
  return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict, component: set) -> list[str]:
  """The shortest cycle through the component's first module (breadth-first within the component)."""
  start = min(component)
  previous, frontier = {start: None}, [start]
  while frontier:
    following = []
    for node in frontier:
      for child in sorted(graph[node]):
        if child == start:
          path = [node]
          while previous[path[-1]] is not None:
            path.append(previous[path[-1]])
          return [*reversed(path), start]
        if child in component and child not in previous:
          previous[child] = node
          following.append(child)
    frontier = following
  raise AssertionError(f'no cycle through {start} in {sorted(component)}')


def _chain(graph: dict, cycle: list[str]) -> str:
  """'a.py:12 -> b.py:30 -> a.py': where each module of the cycle imports the next."""
  files = {module: os.path.relpath(path, REPO) for path, module in _modules()}
  return ' -> '.join([f'{files[a]}:{graph[a][b]}' for a, b in zip(cycle, cycle[1:])] + [files[cycle[-1]]])


def test_no_import_cycles():
  """No two e2urec_jax modules import each other, directly or through others, deferred imports included:
  a cycle is broken by moving the piece both need into a module below them both."""
  graph = _import_graph()
  cycles = [_chain(graph, cycle) for cycle in _cycles(graph)]
  assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_the_cycle_check_finds_a_cycle():
  """The check above is not vacuous: it finds a planted cycle and names where each module imports the next."""
  graph = {'a': {'b': 3}, 'b': {'c': 5}, 'c': {'a': 7, 'd': 1}, 'd': {}}
  assert _cycles(graph) == [['a', 'b', 'c', 'a']]
  assert _cycles({'a': {'b': 1}, 'b': {}}) == []


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
