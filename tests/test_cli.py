"""The command line's shape: one module per command group, no import circle in the package, results that name
folders relative to the checkout, and `detok --version`."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

import detok
from detok.bench.results import repo_relative, repository_of
from detok.cli import GROUPS, build_parser, main

SRC = Path(detok.__file__).parent


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, (*path, name))


def test_each_group_module_holds_its_parsers_and_their_handlers():
    seen = set()
    for group in GROUPS:
        sub = argparse.ArgumentParser().add_subparsers()
        group.add_parser(sub)
        commands = set(sub.choices)
        assert commands and not commands & seen, f"{group.__name__} adds no command, or one another group adds"
        seen |= commands
        for parser in sub.choices.values():
            for path, leaf in _leaves(parser):
                fn = leaf.get_default("fn")
                assert fn is not None and fn.__module__ == group.__name__, (group.__name__, path)
    assert seen == set(build_parser()._subparsers._group_actions[0].choices)


def _imports(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    """Every import counts, at the top of a module or inside a function (a package's __init__ aside)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = ("detok", *path.relative_to(SRC).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(path, module):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not (path.name == "__init__.py" and name.startswith(module + ".")):
                targets.add(name)
        graph[module] = targets

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    circles = sorted(m for m in graph if m in reaches(m))
    assert not circles, f"modules in an import circle: {circles}"


def test_results_name_folders_relative_to_the_checkout(tmp_path):
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "docs" / "results").mkdir(parents=True)
    assert repository_of(root / "docs" / "results") == root.resolve()
    root = root.resolve()
    record = {
        "command": f"detok bench reproduce --work {root}/runs/w --out {root}/docs/results/x",
        "cells": [{"run_dir": f"{root}/runs/w/a-seed0", "overrides": [f"model.encoder=detok:{root.parent}/other/t"]}],
        "elsewhere": "/usr/share/datasets/fashion-mnist",
        "seconds": 1.5,
    }
    assert repo_relative(record, root) == {
        "command": "detok bench reproduce --work runs/w --out docs/results/x",
        "cells": [{"run_dir": "runs/w/a-seed0", "overrides": ["model.encoder=detok:../other/t"]}],
        "elsewhere": "/usr/share/datasets/fashion-mnist",
        "seconds": 1.5,
    }
    assert repo_relative(str(root), root) == "." and repo_relative(f"{root}2/x", root) == f"../{root.name}2/x"
    assert repo_relative(record, None) is record  # outside a checkout nothing is rewritten


def test_version_is_written_once_and_printed(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"detok {detok.__version__}\n"
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "detok.__version__"}
