"""PyTorch twins of the examples' models: the same module tree (so the engine's
``state_dict`` loads into them with ``strict=True``, no renaming) and the same forward.

    import torch
    from benchmarks.torch_models import torch_twin
    net = torch_twin(torch, model)          # weights copied: net(x) == model(x)

Standard layers and containers (``nn.Sequential``, ``nn.ModuleList``, Linear, Conv2d,
ConvTranspose2d, BatchNorm, pooling, Upsample, Dropout, activations...) are mirrored
by ``torch_layer``. A model class with its own ``forward`` needs a builder in ``TWINS``
(class name -> ``build(torch, model) -> torch module``): the U-Net's is the one the
parity script ``compare_unet_torch.py`` trains. Adding an example's model is one entry.

torch is handed in (never imported here), so this module loads without it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "examples"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tinygrad_uu import nn  # noqa: E402


def _conv_args(m) -> dict:
    return dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
                bias=m.bias is not None)


def torch_layer(torch, m):
    """The torch layer (or container, recursively) that computes what ``m`` computes."""
    tnn = torch.nn
    if isinstance(m, nn.Sequential):
        return tnn.Sequential(*[torch_twin_untrained(torch, c) for c in m])
    if isinstance(m, nn.ModuleList):
        return tnn.ModuleList([torch_twin_untrained(torch, c) for c in m])
    if isinstance(m, nn.Linear):
        return tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if isinstance(m, nn.ConvTranspose2d):
        return tnn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size,
                                   output_padding=m.output_padding, **_conv_args(m))
    if isinstance(m, nn.Conv2d):
        return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, **_conv_args(m))
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        cls = tnn.BatchNorm1d if isinstance(m, nn.BatchNorm1d) else tnn.BatchNorm2d
        return cls(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                   track_running_stats=m.track_running_stats)
    if isinstance(m, nn.MaxPool2d):
        return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.AvgPool2d):
        return tnn.AvgPool2d(m.kernel_size, m.stride, m.padding)  # count_include_pad, as ours
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return tnn.AdaptiveAvgPool2d(m.output_size)
    if isinstance(m, nn.Upsample):
        return tnn.Upsample(size=m.size, scale_factor=m.scale_factor, mode=m.mode,
                            align_corners=False if m.mode == "bilinear" else None)
    if isinstance(m, nn.Dropout2d):
        return tnn.Dropout2d(m.p)
    if isinstance(m, nn.Dropout):
        return tnn.Dropout(m.p)
    if isinstance(m, nn.Flatten):
        return tnn.Flatten(m.start_dim, m.end_dim)
    if isinstance(m, nn.LeakyReLU):
        return tnn.LeakyReLU(m.negative_slope)
    if isinstance(m, nn.LogSoftmax):
        return tnn.LogSoftmax(m.dim)
    if isinstance(m, nn.Softmax):
        return tnn.Softmax(m.dim)
    simple = {nn.ReLU: tnn.ReLU, nn.Tanh: tnn.Tanh, nn.Sigmoid: tnn.Sigmoid,
              nn.Identity: tnn.Identity}
    if type(m) in simple:
        return simple[type(m)]()
    return None


# ----------------------------------------------------------------------------- own forwards

def _unet(torch, model):
    """examples/segmentation.py's UNet: compare_unet_torch.py's twin, configured from the model."""
    from benchmarks import compare_unet_torch
    up = model.ups[0]
    args = argparse.Namespace(
        width=model.head.in_channels, depth=model.depth,
        batch_norm=any(isinstance(m, nn.BatchNorm2d) for m in model.modules()),
        up="transpose" if isinstance(up, nn.ConvTranspose2d) else up.mode)
    return compare_unet_torch.torch_unet(torch, model, args)


def _tiny_yolo(torch, model):
    """examples/detection.py's TinyYOLO: compare_detector_torch.py's twin."""
    from benchmarks import compare_detector_torch
    first_conv = model.stride8[0][0]
    return compare_detector_torch.torch_detector(torch, model, first_conv.in_channels,
                                                 first_conv.out_channels)


def _resnet(torch, model):
    """examples/competition.py's ResNet: compare_resnet_torch.py's twin."""
    from benchmarks import compare_resnet_torch
    stages = sum(1 for m in model.stages if m.stride == 2)
    args = argparse.Namespace(width=model.stem[0].out_channels,
                              blocks=len(model.stages) // stages, dropout=model.dropout.p)
    return compare_resnet_torch.torch_resnet(torch, model, args)


def _basic_block(torch, block):
    """nn.BasicBlock: compare_resnet_torch.py's block, configured from the layer."""
    from benchmarks import compare_resnet_torch
    return compare_resnet_torch.torch_basic_block(torch, block.in_channels, block.out_channels, block.stride,
                                                  projection=isinstance(block.shortcut, nn.Sequential))


TWINS = {
    "UNet": _unet,
    "TinyYOLO": _tiny_yolo,
    "ResNet": _resnet,
    "BasicBlock": _basic_block,
}


def torch_twin_untrained(torch, model):
    """The torch twin of ``model``, with torch's own initial weights."""
    layer = torch_layer(torch, model)
    if layer is not None:
        return layer
    build = TWINS.get(type(model).__name__)
    if build is None:
        raise KeyError(f"no PyTorch twin for {type(model).__name__}: add a builder to "
                       "benchmarks/torch_models.py TWINS")
    return build(torch, model)


def torch_twin(torch, model):
    """The torch twin of ``model`` with its weights and buffers, loaded with strict=True,
    in the same train/eval mode."""
    net = torch_twin_untrained(torch, model)
    net.load_state_dict(nn.to_torch_state_dict(model), strict=True)
    return net.train(model.training)
