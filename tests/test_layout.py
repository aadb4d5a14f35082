"""The package's shape: fastmlp.nn laid out as torch.nn.modules, and imports that follow the layers listed in
fastmlp/__init__.py (module-level imports form no cycle and never reach a higher layer; the function-level
imports of a higher layer are exactly Sequential's facade methods). Read from the sources with ast."""
import ast
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmlp as fm

PKG = Path(fm.__file__).parent
DATA = Path(__file__).parent / "data"

# each module's layer, lowest first (the list in fastmlp/__init__.py); a new module must be placed here
LAYERS = [
    {"fastmlp._core", "fastmlp._arrays", "fastmlp._files", "fastmlp._random", "fastmlp._version"},
    {"fastmlp.nn", "fastmlp.nn.module", "fastmlp.nn.linear", "fastmlp.nn.activation", "fastmlp.nn.normalization",
     "fastmlp.nn.dropout", "fastmlp.nn.container", "fastmlp.nn.loss", "fastmlp.nn.utils", "fastmlp.init",
     "fastmlp._mlp"},
    {"fastmlp.optim", "fastmlp.optim.optimizer", "fastmlp.optim.lbfgs", "fastmlp.optim.lr_scheduler"},
    {"fastmlp.callbacks"},
    {"fastmlp.training"},
    {"fastmlp.serialization", "fastmlp.datasets"},
    {"fastmlp.distributed", "fastmlp._export", "fastmlp.c_export"},
    {"fastmlp.estimators"},
    {"fastmlp.onnx"},
    {"fastmlp"},
    {"fastmlp.cli", "fastmlp.__main__"},
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}

# the only function-level imports of a higher layer: Sequential's Keras-style facade (nn/container.py)
FACADE = {
    ("fastmlp.nn.container", "_training", "fastmlp.training"),  # train_step, predict, evaluate: kept
    ("fastmlp.nn.container", "Sequential.fit", "fastmlp.training"),
    ("fastmlp.nn.container", "Sequential.fit", "fastmlp.distributed"),
    ("fastmlp.nn.container", "Sequential.save", "fastmlp.serialization"),
    ("fastmlp.nn.container", "Sequential.to_onnx", "fastmlp.onnx"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    """{module name: path} of every Python module of the package, and the C++ extension."""
    out = {_module_name(p): p for p in PKG.rglob("*.py")}
    out["fastmlp._core"] = PKG / "_core.pyi"
    return out


MODULES = _modules()


def _imports(name: str, text: str, is_package: bool = False) -> list:
    """[(qualname of the enclosing function, or None at module level (class bodies included), fastmlp module
    imported)] of one module's source: run-time imports only (`if TYPE_CHECKING:` blocks left out);
    `from a import b` imports a.b when that is a module, else a."""
    package = name if is_package else name.rpartition(".")[0]
    out = []

    def targets(node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = package.split(".")
        base = base[:len(base) - node.level + 1] if node.level else []
        mod = ".".join(base + ([node.module] if node.module else []))
        return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]

    def walk(node, qual, func):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{qual}.{child.name}" if qual else child.name
                walk(child, inner, func or inner if not isinstance(child, ast.ClassDef) else func)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((func, t) for t in targets(child) if t == "fastmlp" or t.startswith("fastmlp."))
            walk(child, qual, func)

    walk(ast.parse(text), None, None)
    return out


IMPORTS = {name: _imports(name, path.read_text(), path.name == "__init__.py")
           for name, path in MODULES.items() if path.suffix == ".py"}


def _graph(imports: dict) -> dict:
    """Module-level import edges. Importing a.b.c from outside package a.b also runs a.b's __init__,
    so that edge is added; a module of a package importing its siblings does not (the package is
    already being imported)."""
    graph: dict = {name: set() for name in MODULES}
    for name, found in imports.items():
        for func, t in found:
            if func is not None:
                continue
            graph[name].add(t)
            parent = t.rpartition(".")[0]
            while parent not in ("", "fastmlp") and not (name + ".").startswith(parent + "."):
                graph[name].add(parent)
                parent = parent.rpartition(".")[0]
    return graph


def _cycle(graph: dict) -> list | None:
    """A cycle of the graph ([a, b, ..., a]), or None: a depth-first search."""
    state: dict = {}

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m, stack + [m])
                if found:
                    return found
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n, [n])
            if found:
                return found
    return None


def _upward(graph: dict) -> list:
    return sorted((a, b) for a, bs in graph.items() for b in bs if RANK[b] > RANK[a])


def _deferred_up(imports: dict) -> set:
    return {(name, func, t) for name, found in imports.items() for func, t in found
            if func is not None and RANK[t] > RANK[name]}


def test_every_module_has_a_layer():
    assert set(MODULES) == set(RANK), "place new modules in LAYERS (and in fastmlp/__init__.py's list)"
    assert set(IMPORTS) | {"fastmlp._core"} == set(MODULES)
    for name, imports in IMPORTS.items():
        assert {t for _, t in imports} <= set(MODULES), f"{name} imports a fastmlp module that does not exist"


def test_module_level_imports_go_down_and_form_no_cycle():
    graph = _graph(IMPORTS)
    assert _upward(graph) == [], "module-level imports of a higher layer"
    assert _cycle(graph) is None


def test_deferred_imports_of_a_higher_layer_are_the_facade():
    assert _deferred_up(IMPORTS) == FACADE


def test_the_checks_see_cycles_upward_and_deferred_imports():
    """The same checks on sources written to break them (a test that cannot fail is a defect): nn.module
    importing training at module level (upward, and a cycle, training importing nn), a class body importing
    onnx (module level), a function inside a method importing serialization (deferred, that method's)."""
    bad = dict(IMPORTS)
    bad["fastmlp.nn.module"] = _imports("fastmlp.nn.module", "from ..training import fit\n")
    bad["fastmlp.callbacks"] = _imports("fastmlp.callbacks", "class C:\n    from . import onnx\n"
                                        "    def f(self):\n        def g():\n            from .serialization import save\n")
    assert bad["fastmlp.callbacks"] == [(None, "fastmlp.onnx"), ("C.f", "fastmlp.serialization")]
    graph = _graph(bad)
    assert ("fastmlp.nn.module", "fastmlp.training") in _upward(graph)
    assert ("fastmlp.callbacks", "fastmlp.onnx") in _upward(graph)
    cycle = _cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) > 2
    assert _deferred_up(bad) == FACADE | {("fastmlp.callbacks", "C.f", "fastmlp.serialization")}
    assert _imports("fastmlp.cli", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import nn\n") == []
    assert _imports("fastmlp.nn", "from . import utils, Linear\n", is_package=True) == [
        (None, "fastmlp.nn.utils"), (None, "fastmlp.nn")]


def test_import_fastmlp_nn_loads_no_training_or_estimators():
    """A child interpreter: `import fastmlp.nn` runs fastmlp/__init__.py first, and loads exactly the modules
    it reaches by module-level imports in the graph above: serialization (fm.load) and c_export (fm.export_c)
    are among them, training, distributed, estimators, onnx and the CLI are not."""
    code = "import sys, fastmlp.nn; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'fastmlp')))"
    env = dict(os.environ, PYTHONPATH=str(PKG.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.split())
    graph, reach, todo = _graph(IMPORTS), set(), ["fastmlp", "fastmlp.nn"]
    while todo:
        n = todo.pop()
        if n not in reach:
            reach.add(n)
            todo += graph[n]
    assert loaded == reach
    assert not loaded & {"fastmlp.training", "fastmlp.distributed", "fastmlp.estimators", "fastmlp.onnx",
                         "fastmlp.cli"}
    assert "sklearn" not in r.stdout


def test_nn_names():
    import fastmlp.nn.utils

    for name in fm.nn.__all__:
        obj = getattr(fm.nn, name)
        if name != "utils":
            assert getattr(fm, name) is obj and name in fm.__all__
            assert obj.__module__.startswith("fastmlp.nn.")
    assert fm.nn.Linear is fm.Linear and fm.nn.MSELoss is fm.MSELoss and fm.nn.Sequential is fm.Sequential
    assert fm.nn.utils is fastmlp.nn.utils and fm.nn.utils.clip_grad_norm_ is fastmlp.nn.utils.clip_grad_norm_
    assert importlib.util.find_spec("fastmlp.losses") is None and importlib.util.find_spec("fastmlp.nn_utils") is None
    # one file per family; every registered layer class is exported
    files = {"Linear": "linear", "Identity": "linear", "Flatten": "linear", "ReLU": "activation", "PReLU": "activation",
             "GELU": "activation", "BatchNorm1d": "normalization", "RMSNorm": "normalization", "Dropout": "dropout",
             "AlphaDropout": "dropout", "Sequential": "container", "Residual": "container", "Module": "module",
             "Parameter": "module", "MSELoss": "loss", "NLLLoss": "loss"}
    for name, f in files.items():
        assert getattr(fm.nn, name).__module__ == f"fastmlp.nn.{f}"
    from fastmlp.nn.module import _LAYER_TYPES

    layers = {getattr(fm.nn, n) for n in fm.nn.__all__ if isinstance(getattr(fm.nn, n), type)
              and issubclass(getattr(fm.nn, n), fm.Module)} - {fm.Module, fm.Sequential}
    assert set(_LAYER_TYPES.values()) == layers and len(layers) == 29


def test_names_keep_their_types(tmp_path):
    """fastmlp and fastmlp.nn re-export the nn files' names with star imports: a type checker still sees each
    class (not the Any of fastmlp's module __getattr__)."""
    pytest.importorskip("mypy")
    (tmp_path / "use.py").write_text(
        "import fastmlp as fm\nfrom fastmlp import Linear, MSELoss, Sequential\nfrom fastmlp.nn import ReLU\n"
        "from fastmlp.nn.utils import clip_grad_norm_\n"
        "reveal_type(Sequential(Linear(2, 3), ReLU()))\nreveal_type(fm.BatchNorm1d(3))\nreveal_type(fm.nn.Residual())\n"
        "reveal_type(MSELoss())\nreveal_type(clip_grad_norm_)\nreveal_type(fm.nn.Parameter)\n")
    import site
    import sysconfig

    installed = {os.path.realpath(d) for d in [*site.getsitepackages(), *sysconfig.get_paths().values()]}
    env = dict(os.environ)
    if os.path.realpath(PKG.parent) not in installed:  # a source checkout: show mypy where the package is
        env["MYPYPATH"] = str(PKG.parent)
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "use.py"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env=env)
    revealed = [line.split("Revealed type is ")[1] for line in r.stdout.splitlines() if "Revealed type is" in line]
    assert len(revealed) == 6, r.stdout + r.stderr
    for want, got in zip(["container.Sequential", "normalization.BatchNorm1d", "container.Residual", "loss.MSELoss",
                          "numpy.ndarray", "module.Parameter"], revealed):
        assert want in got, r.stdout


def test_version_is_pyprojects():
    toml = Path(__file__).parents[1] / "pyproject.toml"
    if not toml.exists():
        pytest.skip("no source checkout")
    assert f'\nversion = "{fm.__version__}"\n' in toml.read_text()


def test_pickles_made_before_the_nn_package_load():
    """tests/data/models_before_nn_package.pkl was written by the code before nn.py became a package (class
    paths fastmlp.nn.Sequential, fastmlp.nn.Linear, fastmlp.nn.Grad, fastmlp.nn._Block, ...): a float64
    model of most layer kinds (a residual block, BatchNorm's running statistics after 3 AdamW steps, a frozen
    layer) with its AdamW optimizer and its eval-mode outputs, and unbuilt layers with their reprs."""
    blob = (DATA / "models_before_nn_package.pkl").read_bytes()
    assert b"fastmlp.nn\x94" in blob and b"fastmlp.nn.container" not in blob  # the old class paths
    d = pickle.loads(blob)
    model, opt = d["model"], d["optimizer"]
    assert type(model) is fm.Sequential and isinstance(model[3], fm.Residual)
    out = model.predict(d["X"])  # the outputs written with the pickle (on another CPU's kernels, maybe)
    np.testing.assert_allclose(out, d["out"], rtol=1e-12, atol=1e-14)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, d["state_dict"][k])
    assert model[0].weight.requires_grad is False and model[9].weight.requires_grad is True
    assert [repr(m) for m in d["layers"]] == d["layer_reprs"]
    assert type(opt) is fm.optim.AdamW and opt.state_dict()["state"]
    # the unpickled layers build and train; a new pickle names the new modules and round-trips
    m2 = fm.Sequential(*d["layers"][:3], seed=0)
    assert m2(np.ones((2, 3), np.float32)).shape == (2, 2)
    blob2 = pickle.dumps(model)
    assert b"fastmlp.nn.container" in blob2
    np.testing.assert_array_equal(pickle.loads(blob2).predict(d["X"]), out)
