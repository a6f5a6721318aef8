"""Lower layers never import higher ones (docs/architecture.md)."""

import ast
import pathlib

import pytest

import headwater

ROOT = pathlib.Path(headwater.__file__).parent

# package -> headwater packages it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "_util": {"errors"},
    "records": {"errors", "_util"},
    "log": {"errors", "_util", "records"},
    "protocol": {"errors", "_util", "records"},
    "broker": {"errors", "_util", "records", "log"},
    "server": {"errors", "_util", "records", "log", "broker", "protocol"},
    "client": {"errors", "_util", "records", "log", "broker"},
    "stream": {"errors", "_util", "records", "client"},
    "testing": {"errors", "_util", "stream"},
    "apps": {"errors", "_util", "records", "log", "broker", "client", "stream"},
    "cli": None,  # anything
}


def _package_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "headwater" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = [p for p in ROOT.rglob("*.py") if p.parent != ROOT or p.stem == "errors"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_lower_layers(path: pathlib.Path) -> None:
    package = _package_of(path)
    assert package in ALLOWED, f"{package} is not in the layer table; add it"
    allowed = ALLOWED[package]
    if allowed is None:
        return
    illegal = _imports(path) - allowed - {package}
    assert not illegal, f"{path.relative_to(ROOT)} imports {sorted(illegal)}"


def test_public_surface_is_frozen() -> None:
    assert sorted(headwater.__all__) == [
        "App",
        "Consumer",
        "EmbeddedBroker",
        "HeadwaterError",
        "KafkaCluster",
        "Producer",
        "Record",
        "RecordMetadata",
        "TopicPartition",
        "__version__",
        "connect",
        "open",
    ]


def test_package_docstring_example_runs() -> None:
    import doctest

    result = doctest.testmod(headwater, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
