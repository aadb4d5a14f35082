"""Optimizers (torch.optim semantics) and learning-rate schedules."""
from . import lr_scheduler
from .lbfgs import LBFGS
from .optimizer import ASGD, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, Optimizer, RAdam, RMSprop

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam", "RAdam", "Adamax",
           "ASGD", "LBFGS", "lr_scheduler"]
