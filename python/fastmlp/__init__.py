"""fastmlp: fast multilayer perceptrons on the CPU.

A C++ engine (OpenBLAS for matrix products) with PyTorch's semantics for
layers, losses, optimizers and initializers, behind a NumPy API.
"""
from __future__ import annotations


def _preload_openblas() -> None:
    # _core links libscipy_openblas.so; load it from the scipy_openblas32
    # package first so that the extension finds it in every install layout.
    import ctypes
    import os

    import scipy_openblas32

    ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so"), mode=ctypes.RTLD_GLOBAL)


_preload_openblas()

# The package's layers, lowest first. A module imports (at module level) only modules of its own layer or
# lower ones, so the imports form no cycle (tests/test_layout.py checks it, and lists the few function-level
# imports of a higher layer: Sequential's fit/train_step/predict/evaluate/save/to_onnx facade).
#   _core (the C++ extension), _arrays, _files, _random, _version    no fastmlp imports
#   nn/ (module.py, then linear, activation, normalization, dropout, loss, utils, then container), init,
#   _mlp (the estimators' and the CLI's network layout and activation names)
#   optim/
#   callbacks
#   training                           fit, train_step, predict, evaluate
#   serialization, datasets            files
#   distributed, _export, c_export
#   estimators                         scikit-learn
#   onnx                               its skl2onnx converters read the estimators
#   fastmlp (this file)                imports the layers up to c_export; estimators and onnx on first use
#   cli, __main__
from . import callbacks, datasets, init, nn, optim  # noqa: E402
from ._random import initial_seed, manual_seed  # noqa: E402
from ._version import __version__  # noqa: E402
from .c_export import export_c  # noqa: E402
from .callbacks import EarlyStopping, History  # noqa: E402
# every name of fastmlp.nn (each of its files' __all__: a new layer class is exported by its own file)
from .nn.activation import *  # noqa: E402,F401,F403
from .nn.container import *  # noqa: E402,F401,F403
from .nn.dropout import *  # noqa: E402,F401,F403
from .nn.linear import *  # noqa: E402,F401,F403
from .nn.loss import *  # noqa: E402,F401,F403
from .nn.module import *  # noqa: E402,F401,F403
from .nn.normalization import *  # noqa: E402,F401,F403
from .serialization import load  # noqa: E402

__all__ = ["datasets", "optim", "init", "callbacks", "EarlyStopping", "History", "manual_seed", "initial_seed", "load",
           "export_c", "__version__"]
__all__ += nn.__all__

# scikit-learn estimators, imported on first use so that the core never imports scikit-learn
# (in __all__ only when the 'sklearn' extra is installed, so that `import *` works without it)
if all(__import__("importlib.util").util.find_spec(m) for m in ("sklearn", "scipy")):
    __all__ += ["MLPClassifier", "MLPRegressor"]


def __getattr__(name: str):  # noqa: E302
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators
        return getattr(estimators, name)
    if name == "onnx":  # the ONNX exporter, imported on first use (needs the 'onnx' extra)
        import importlib
        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")
