"""Neural-network building blocks: ``Module``, layers, losses, ``init`` and ``functional``.

    from tinygrad_uu import nn
    import tinygrad_uu.nn.functional as F
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
"""
from . import functional, init
from .blocks import BasicBlock
from .conv import (AdaptiveAvgPool2d, AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d,
                   Upsample)
from .layers import (Dropout, Dropout2d, Flatten, Identity, LeakyReLU, Linear, LogSoftmax,
                     ModuleList, ReLU, Sequential, Sigmoid, Softmax, Tanh)
from .losses import (BCEDiceLoss, BCEWithLogitsLoss, CrossEntropyLoss, DiceLoss, MSELoss,
                     NLLLoss)
from .module import Module, Parameter
from .normalization import BatchNorm1d, BatchNorm2d
from .serialization import (from_torch_state_dict, load, load_state_dict, save,
                            to_torch_state_dict)
