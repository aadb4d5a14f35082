"""Layers, the Sequential model and the losses (torch.nn semantics, C++ engine)."""
from . import utils
from .loss import *  # noqa: F401,F403
from .loss import __all__ as _loss_all
from .module import *  # noqa: F401,F403
from .module import __all__ as _module_all
from .module import Grad, _Block  # noqa: F401  (pickles made before the split name fastmlp.nn.Grad, fastmlp.nn._Block)

__all__ = [*_module_all, *_loss_all, "utils"]
