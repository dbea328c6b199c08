"""The import layering of docs/ARCHITECTURE.md holds in the code.

The table under "## Import layering" says which keras_admm packages each package
may import. This test reads that table and every module's imports (module level
and inside functions) with `ast`, so the page and the code cannot drift apart.
"""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_admm")
ARCHITECTURE = os.path.join(ROOT, "docs", "ARCHITECTURE.md")


def _top_level_names():
    """keras_admm's packages and modules: 'pruning', 'sparsity', ..."""
    names = set()
    for entry in os.listdir(PACKAGE):
        path = os.path.join(PACKAGE, entry)
        if entry.endswith(".py") and entry != "__init__.py":
            names.add(entry[:-3])
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            names.add(entry)
    return names


def _layering_table():
    """{package: set of packages it may import}, read from ARCHITECTURE.md."""
    with open(ARCHITECTURE) as f:
        text = f.read()
    section = text.split("## Import layering", 1)[1].split("\n## ", 1)[0]
    known = _top_level_names()
    allowed = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        packages = [n for n in re.findall(r"`([\w.]+)`", cells[0]) if n in known]
        may_import = {n for n in re.findall(r"`([\w.]+)`", cells[1]) if n in known}
        for package in packages:
            allowed[package] = may_import
    return allowed


def _imports(path, package_parts=()):
    """[(imported keras_admm top-level name, line, inside a function)].

    `package_parts`: the file's package below keras_admm (("pruning",) for
    keras_admm/pruning/masks.py), to resolve relative imports.
    """
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []

    def absolute(node):
        """The ImportFrom's module as a dotted keras_admm path, or None."""
        if node.level == 0:
            return node.module
        if node.level - 1 > len(package_parts):
            return None
        base = ["keras_admm", *package_parts[: len(package_parts) - (node.level - 1)]]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    parts = alias.name.split(".")
                    if parts[0] == "keras_admm":
                        name = parts[1] if len(parts) > 1 else "keras_admm"
                        found.append((name, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom) and absolute(child):
                parts = absolute(child).split(".")
                if parts[0] == "keras_admm":
                    if len(parts) > 1:
                        found.append((parts[1], child.lineno, in_function))
                    else:  # from keras_admm import registry, sparsity
                        for alias in child.names:
                            found.append((alias.name, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _modules():
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, PACKAGE)
                if relative == "__init__.py":
                    continue  # lazy re-exports of everything, through importlib
                yield relative.split(os.sep)[0].removesuffix(".py"), relative, path


def test_the_table_names_every_package():
    table = _layering_table()
    missing = _top_level_names() - set(table)
    assert not missing, f"docs/ARCHITECTURE.md's layering table lacks {sorted(missing)}"


def _violations(modules, table):
    """'file:line ...' for every import the table forbids."""
    wrong = []
    for package, relative, path in modules:
        parts = tuple(relative.split(os.sep)[:-1])
        for name, line, in_function in _imports(path, parts):
            if name == package:
                continue
            if package == "profiling" and name == "registry":
                # The table's one exception: only inside flops.py's functions.
                if relative == os.path.join("profiling", "flops.py") and in_function:
                    continue
                wrong.append(f"{relative}:{line} imports registry outside flops.py")
            elif name not in table.get(package, set()):
                wrong.append(f"{relative}:{line} ({package}) imports {name}")
    return wrong


def test_every_import_follows_the_table():
    wrong = _violations(_modules(), _layering_table())
    assert not wrong, "imports the layering table forbids:\n" + "\n".join(wrong)


def test_the_check_catches_a_forbidden_import(tmp_path):
    # The checker itself: upward imports in a pruning module are reported,
    # absolute, deferred and relative ones; allowed ones are not.
    path = tmp_path / "bad.py"
    path.write_text(
        "from keras_admm.compaction import compact\n"
        "from . import selection\n"
        "from ..training import admm\n"
        "from ..graph import DependencyGraph\n"
        "def f():\n"
        "    from keras_admm import training\n"
    )
    assert _imports(str(path), ("pruning",)) == [
        ("compaction", 1, False),
        ("pruning", 2, False),
        ("training", 3, False),
        ("graph", 4, False),
        ("training", 6, True),
    ]
    fake = [("pruning", os.path.join("pruning", "bad.py"), str(path))]
    assert _violations(fake, _layering_table()) == [
        "pruning/bad.py:1 (pruning) imports compaction",
        "pruning/bad.py:3 (pruning) imports training",
        "pruning/bad.py:6 (pruning) imports training",
    ]
