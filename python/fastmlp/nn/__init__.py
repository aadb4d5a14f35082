"""fastmlp.nn, laid out as torch.nn.modules: module.py (Parameter, Module, the registry of layer classes),
linear.py, activation.py, normalization.py, dropout.py, container.py (Sequential, Residual), loss.py, and
utils.py (torch.nn.utils's gradient clipping). Every name here is also fastmlp's: fm.Linear is fm.nn.Linear.
The names are each file's __all__, so a new layer class is exported by its own file."""
from . import activation, container, dropout, linear, loss, module, normalization, utils
from .activation import *  # noqa: F401,F403
from .container import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .module import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403

# pickles made before nn.py became this package name these two as fastmlp.nn.Grad and fastmlp.nn._Block
from .container import _Block  # noqa: E402,F401
from .module import Grad  # noqa: E402,F401

__all__: list[str] = []
__all__ += module.__all__
__all__ += linear.__all__
__all__ += activation.__all__
__all__ += normalization.__all__
__all__ += dropout.__all__
__all__ += container.__all__
__all__ += loss.__all__
