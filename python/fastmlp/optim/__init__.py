"""Optimizers (torch.optim semantics) and learning-rate schedules."""
from . import lr_scheduler
from .optimizer import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "lr_scheduler"]
