"""Every example's model, as the example builds it, with random weights and batch-norm
statistics: the cases of the export tests (tests/test_onnx.py: onnxruntime gives the
engine's outputs; tests/test_torch_state_dict.py: the PyTorch twin in
benchmarks/torch_models.py loads the weights strictly and gives the same outputs).

Adding an example's model to every export test is one entry in EXAMPLE_MODELS (and, if
its class has its own forward, one builder in benchmarks/torch_models.py TWINS).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import competition  # noqa: E402
import detection  # noqa: E402
import mnist_cnn  # noqa: E402
import mnist_mlp  # noqa: E402
import segmentation  # noqa: E402

from tinygrad_uu import manual_seed, nn  # noqa: E402


@dataclass
class ExampleModel:
    name: str
    build: Callable[[], nn.Module]  # the model as the example builds it (its defaults)
    input_shape: tuple              # one sample's shape: the batch axis is added by the tests

    def model(self, seed: int = 0) -> nn.Module:
        manual_seed(seed)
        return randomize_batch_norm(self.build(), seed)

    def inputs(self, batch: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.standard_normal((batch,) + self.input_shape).astype(np.float32)


EXAMPLE_MODELS = [
    ExampleModel("mnist_mlp", lambda: mnist_mlp.build_model(256), (1, 28, 28)),
    ExampleModel("mnist_linear", lambda: mnist_mlp.build_model(0), (1, 28, 28)),
    ExampleModel("mnist_cnn", lambda: mnist_cnn.build_model(), (1, 28, 28)),
    ExampleModel("mnist_cnn_no_bn", lambda: mnist_cnn.build_model((4, 8), 16, False, 0.3),
                 (1, 28, 28)),
    ExampleModel("unet", lambda: segmentation.UNet(), (3, 32, 32)),
    ExampleModel("unet_bilinear", lambda: segmentation.UNet(3, 8, 3, up="bilinear"), (3, 32, 32)),
    ExampleModel("unet_transpose", lambda: segmentation.UNet(3, 8, 3, up="transpose"),
                 (3, 32, 32)),
    ExampleModel("competition_simple", lambda: competition.build_simple(), (3, 32, 32)),
    ExampleModel("competition_resnet", lambda: competition.build_resnet(), (3, 32, 32)),
    ExampleModel("competition_resnet_2_blocks",
                 lambda: competition.build_resnet(blocks_per_stage=2), (3, 48, 48)),
    ExampleModel("detector", lambda: detection.build_model(), (1, 64, 64)),
    ExampleModel("detector_one_head_rgb",
                 lambda: detection.build_model(2, 3, strides=(16,)), (3, 32, 32)),
    # ExampleModel("resnet", lambda: competition.build_resnet(), (3, 32, 32)),
]


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm random running statistics and affine weights, as training
    would (fresh ones are mean 0, variance 1, weight 1, bias 0: an export that dropped
    them would pass unnoticed)."""
    rng = np.random.default_rng(seed + 1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            if m.running_mean is not None:
                m.running_mean.data[:] = rng.normal(0, 0.5, c)
                m.running_var.data[:] = rng.uniform(0.5, 2.0, c)
                m.num_batches_tracked.data[...] = 7
            if m.weight is not None:
                m.weight.data[:] = rng.uniform(0.5, 1.5, c)
                m.bias.data[:] = rng.normal(0, 0.2, c)
    return model
