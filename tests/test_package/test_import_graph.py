"""dwnet_mm's modules import each other one way: no cycle among them.

The graph is read from the source (no import runs): an edge goes from a
module to every dwnet_mm module named in one of its import statements, at
module level or inside a function, since a function-level import that
closes a cycle is still a cycle. ``from .pkg import name`` points at the
submodule ``pkg.name`` where there is one, else at ``pkg``.
"""
import ast
import os.path as osp
from pathlib import Path

import pytest

PACKAGE = Path(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__))))) / 'dwnet_mm'


def _modules(root=PACKAGE):
    """Dotted module name -> (path, is a package's __init__)."""
    modules = {}
    for path in sorted(root.rglob('*.py')):
        parts = list(path.relative_to(root.parent).with_suffix('').parts)
        is_package = parts[-1] == '__init__'
        if is_package:
            parts.pop()
        modules['.'.join(parts)] = (path, is_package)
    return modules


def _base(node, module, is_package):
    """The absolute name of a ``from ... import``'s module."""
    if not node.level:
        return node.module
    parts = module.split('.')
    parts = parts[:len(parts) + is_package - node.level]
    return '.'.join(parts + ([node.module] if node.module else []))


def _owner(name, modules):
    """The innermost module of ``modules`` that ``name`` is or is in."""
    while name not in modules and '.' in name:
        name = name.rsplit('.', 1)[0]
    return name if name in modules else None


def _imported(node, module, is_package, modules):
    """The dwnet_mm modules (or None) an import statement loads."""
    if isinstance(node, ast.Import):
        return {_owner(alias.name, modules) for alias in node.names}
    base = _base(node, module, is_package)
    # A name is a submodule or an attribute of the base module.
    return {_owner(f'{base}.{alias.name}', modules) for alias in node.names}


def import_graph(root=PACKAGE):
    """Module -> the package's modules it imports.

    Args:
        root (Path): The package's folder. Defaults to dwnet_mm's.

    Returns:
        dict[str, set[str]]: Edges by dotted module name.
    """
    modules = _modules(root)
    graph = {}
    for module, (path, is_package) in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets |= _imported(node, module, is_package, modules)
        graph[module] = targets - {None, module}
    return graph


def find_cycle(graph):
    """One cycle as a list of modules (first == last), or None."""
    state = {}  # module -> 'open' while on the path, 'done' after
    path = []

    def visit(module):
        state[module] = 'open'
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 'open':
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[module] = 'done'
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_graph_sees_relative_and_function_level_imports(tmp_path):
    package = tmp_path / 'pkg'
    (package / 'sub').mkdir(parents=True)
    (package / '__init__.py').write_text('from .a import f\n')
    (package / 'a.py').write_text('def f():\n    from .sub import b\n')
    (package / 'sub' / '__init__.py').write_text('')
    (package / 'sub' / 'b.py').write_text('from ..a import f\n')
    graph = import_graph(package)
    assert graph == {'pkg': {'pkg.a'}, 'pkg.a': {'pkg.sub.b'},
                     'pkg.sub': set(), 'pkg.sub.b': {'pkg.a'}}
    assert find_cycle(graph) == ['pkg.a', 'pkg.sub.b', 'pkg.a']


@pytest.mark.parametrize('scope', ['dwnet_mm.runner_setup', 'dwnet_mm'])
def test_no_import_cycle(scope):
    graph = {module: targets for module, targets in import_graph().items()
             if module == scope or module.startswith(scope + '.')}
    graph = {module: targets & graph.keys()
             for module, targets in graph.items()}
    cycle = find_cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_config_depends_on_runtime_not_the_reverse():
    graph = import_graph()
    assert 'dwnet_mm.runner_setup.runtime' in graph[
        'dwnet_mm.runner_setup.config']
    assert 'dwnet_mm.runner_setup.config' not in graph[
        'dwnet_mm.runner_setup.runtime']
