"""Optimizers (update the parameters from their gradients) and learning-rate schedulers.

    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss.backward(); optimizer.step(); optimizer.zero_grad()
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler", "LRScheduler",
           "StepLR", "CosineAnnealingLR"]
