"""The package's public surface and its layering."""

import ast
import pathlib

import pytest

import hvd_otto

PACKAGE = pathlib.Path(hvd_otto.__file__).parent


@pytest.mark.parametrize("name", hvd_otto.__all__)
def test_public_names_import_from_the_root(name):
    assert getattr(hvd_otto, name) is not None


def test_the_readme_imports_work():
    from hvd_otto import (  # noqa: F401
        HorovodKerasEstimator,
        HorovodKerasModel,
        InputError,
        TrainingError,
        load_csv,
        prepare,
    )

    with pytest.raises(AttributeError):
        hvd_otto.no_such_name  # noqa: B018


def test_class_paths_recorded_by_earlier_saved_models_still_resolve():
    """Spark imports a saved stage's recorded class; models saved by 0.1 name these."""
    from hvd_otto import CountTransformer, HorovodKerasEstimator, HorovodKerasModel

    legacy = __import__("hvd_otto.estimator", fromlist=["HorovodKerasModel"])
    assert legacy.HorovodKerasModel is HorovodKerasModel
    assert legacy.HorovodKerasEstimator is HorovodKerasEstimator
    assert __import__("hvd_otto.features", fromlist=["x"]).CountTransformer is CountTransformer


def _imports(path: pathlib.Path) -> set[str]:
    """The hvd_otto sub-packages a module imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(PACKAGE.parent).parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target[:1] == ["hvd_otto"] and len(target) > 1:
                found.add(target[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "hvd_otto" and len(parts) > 1:
                    found.add(parts[1])
    return found


#: What each role may import (docs/ARCHITECTURE.md).
ALLOWED = {
    "common": {"common"},
    "data": {"common", "data"},
    "rank": {"common", "rank"},
    "driver": {"common", "data", "driver", "rank"},
    "app": {"common", "data", "driver", "app"},
}


@pytest.mark.parametrize("role", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(role):
    for module in sorted((PACKAGE / role).glob("*.py")):
        extra = _imports(module) - ALLOWED[role]
        assert not extra, f"{module.relative_to(PACKAGE)} imports {sorted(extra)}"


def test_the_driver_imports_only_the_ranks_entry_point():
    for module in sorted((PACKAGE / "driver").glob("*.py")):
        text = module.read_text()
        assert "rank.shards" not in text and "rank.callbacks" not in text, module.name


def test_no_module_is_over_400_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
