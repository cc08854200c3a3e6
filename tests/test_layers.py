"""The layers import one way: environments at the bottom (no torch, no learning), the algorithm
and its building blocks above them, the application on top; and no module imports itself back
through a cycle.  Read from the source (every import statement, lazy ones included), with the
module names the repository's folders have when installed (``setup.cfg``'s ``package_dir``)."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lower number = lower layer; a module may import its own layer and the ones below.
LAYERS = {
    "metarl.envs": 0,
    "metarl.agents.common": 1,
    "metarl.agents": 2,  # one module per algorithm, above their shared building blocks
    "metarl": 3,  # the application: config, CLI, training, evaluation, video, tracking, ...
}
# Third-party packages a layer must not use.
FORBIDDEN = {"metarl.envs": {"torch", "wandb", "stable_baselines3"}}


def package_dirs() -> dict[str, Path]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["package_dir"].strip().splitlines()
    return {
        name.strip(): ROOT / folder.strip()
        for name, _, folder in (line.partition("=") for line in lines)
    }


def modules() -> dict[str, Path]:
    """Installed module name -> source file, for every module of the project."""
    found = {}
    for package, folder in package_dirs().items():
        for path in folder.glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


MODULES = modules()


def imports(name: str) -> set[str]:
    """The project modules and top-level third-party packages that ``name`` imports."""
    path = MODULES[name]
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {m if m in MODULES else m.split(".")[0] for m in found}


def layer(name: str) -> str:
    """The layer that module ``name`` belongs to (its longest matching prefix)."""
    return max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)


def test_every_folder_is_read() -> None:
    assert {"metarl.envs.mujoco_core", "metarl.agents.maml_trpo", "metarl.cli"} <= set(MODULES)
    assert {layer(name) for name in MODULES} == set(LAYERS)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name: str) -> None:
    own = layer(name)
    if name == "metarl":  # the namespace's root registers the gymnasium ids, nothing more
        assert imports(name) <= {"metarl.envs", "__future__"}
        return
    for imported in imports(name):
        if imported in MODULES and imported != "metarl":
            assert LAYERS[layer(imported)] <= LAYERS[own], f"{name} imports {imported} (upward)"
        assert imported not in FORBIDDEN.get(own, set()), f"{name} imports {imported}"


def test_no_import_cycles() -> None:
    graph = {name: {m for m in imports(name) if m in MODULES and m != "metarl"} for name in MODULES}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, " -> ".join([*visiting[visiting.index(name) :], name])
        if name in done:
            return
        visiting.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


@pytest.mark.parametrize(
    ("source", "message"),
    [("from metarl.training import Trainer\n", "upward"), ("import torch\n", "imports torch")],
    ids=["upward", "torch"],
)
def test_a_planted_bad_import_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    """The check above can fail: an environment that imports the training loop, or torch."""
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    monkeypatch.setitem(MODULES, "metarl.envs.planted", planted)
    with pytest.raises(AssertionError, match=message):
        test_imports_point_down("metarl.envs.planted")
