"""The course's figures, each saved straight to a PNG file.

Every function here takes numpy arrays (Tensors work too), draws one figure, writes
it to ``path`` atomically (a temporary file beside it, renamed when complete, so a
crash never leaves half a PNG) and returns ``path``.

Nothing is ever shown on screen. The figures are ``matplotlib.figure.Figure``
objects drawn by the Agg renderer, never registered with pyplot: importing this
module does not change your notebook's backend, and a figure is freed as soon as
its function returns. In Jupyter, look at a result with
``IPython.display.Image(filename=path)``.

    plot_curves               loss and accuracy per epoch
    plot_weight_images        a linear classifier's class templates, or an MLP's filters
    plot_confusion_matrix     counts of (true label, predicted label)
    plot_image_grid           e.g. the most confidently misclassified digits
    plot_segmentation_grid    image | ground truth | prediction, worst Dice first
    plot_overlays             predicted (and true) masks drawn over the images
    plot_predicted_vs_actual  a regression's predictions against the targets
    draw_graph                the computation graph behind a Tensor
    plot_filters              a convolution's kernels (the first layer's filters)
    plot_feature_maps         a layer's activation maps for one image (a forward hook)
    plot_grad_flow            gradient norms per layer over training (debug.GradientMonitor)
"""
from . import common  # noqa: F401  (viz.common._save: where every figure is written)
from .figures import (confusion_matrix, plot_confusion_matrix, plot_curves, plot_image_grid,
                      plot_overlays, plot_predicted_vs_actual, plot_segmentation_grid,
                      plot_weight_images)
from .graph import draw_graph
from .network import plot_feature_maps, plot_filters, plot_grad_flow

__all__ = ["plot_curves", "plot_weight_images", "plot_confusion_matrix", "confusion_matrix",
           "plot_image_grid", "plot_segmentation_grid", "plot_overlays",
           "plot_predicted_vs_actual", "draw_graph", "plot_filters", "plot_feature_maps",
           "plot_grad_flow"]
