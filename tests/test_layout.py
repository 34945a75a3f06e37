"""The library's layout rules, checked on its source: no module imports another's private names, a notebook's module
imports only the modules of the notebooks before it, and a module over 400 lines says in its notebook why."""
import ast, re
from pathlib import Path
import pytest
from conftest import ROOT

LIB = ROOT/'chexpert_nb'
MODULES = sorted(p for p in LIB.glob('*.py') if not p.name.startswith('_'))
LONG = 400  # lines: a longer module gives its reason in its notebook, under a heading saying so

def _notebook(module:Path) -> Path:
    "The notebook a module is exported from (nbdev's header line)."
    m = re.search(r'File to edit: \.\./nbs/(\S+\.ipynb)', module.read_text())
    assert m, f"{module.name} has no nbdev header: is it generated from a notebook?"
    return ROOT/'nbs'/m.group(1)

def _imports(module:Path) -> list:
    "`(imported module, name)` of every `from chexpert_nb... import name` and every `import chexpert_nb.x` in the module."
    out = []
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level: mod = 'chexpert_nb.' + mod if mod else 'chexpert_nb'
            if mod == 'chexpert_nb' or mod.startswith('chexpert_nb.'):
                out += [(mod, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.startswith('chexpert_nb.')]
    return out

def test_every_module_comes_from_a_notebook():
    assert len(MODULES) >= 20
    for m in MODULES: assert _notebook(m).exists(), m

@pytest.mark.parametrize('module', MODULES, ids=lambda p: p.stem)
def test_no_private_name_of_another_module_is_imported(module):
    private = [f"{mod}.{name}" for mod, name in _imports(module) if name and name.startswith('_') and mod != f'chexpert_nb.{module.stem}']
    assert not private, f"{module.name} imports private names of other modules: {private}; make them public or move the code"

@pytest.mark.parametrize('module', MODULES, ids=lambda p: p.stem)
def test_a_module_imports_only_earlier_notebooks(module):
    "The flow of the notebooks is the import order: a reader meets every name before it is used."
    order = lambda m: _notebook(LIB/f"{m.removeprefix('chexpert_nb.').split('.')[0]}.py").name
    mine = _notebook(module).name
    later = sorted({mod for mod, _ in _imports(module) if (LIB/f"{mod.removeprefix('chexpert_nb.')}.py").exists()
                    and mod != f'chexpert_nb.{module.stem}' and order(mod) >= mine})
    assert not later, f"{module.name} ({mine}) imports modules of later notebooks: {later}"

@pytest.mark.parametrize('module', MODULES, ids=lambda p: p.stem)
def test_a_long_module_says_why(module):
    lines = len(module.read_text().splitlines())
    if lines <= LONG: return
    assert 'Why this module is long' in _notebook(module).read_text(), (
        f"{module.name} has {lines} lines (more than {LONG}): split it by concept, or say why not in its notebook "
        "under a heading 'Why this module is long'")

@pytest.mark.parametrize('module', MODULES, ids=lambda p: p.stem)
def test_lines_fit_the_notebook_width(module):
    "150 characters, as ruff checks the tests and benchmarks; the first line (the notebook's description, written whole by nbdev) aside."
    long = [i for i, line in enumerate(module.read_text().splitlines()[1:], 2) if len(line) > 150]
    assert not long, f"{module.name}: lines {long} are longer than 150 characters; wrap them in the notebook"
