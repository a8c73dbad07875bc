"""tinygrad_uu.viz: every figure is a valid PNG, written all or nothing, with clear errors."""
import struct

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from tinygrad_uu import Tensor, viz

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
rng = np.random.default_rng(0)


def read_png(path, min_hw=(150, 150), max_hw=(4000, 4000)):
    """Check ``path`` is the only file in its folder and a readable, non-blank PNG of a
    plausible size; return the pixels."""
    assert [p.name for p in path.parent.iterdir()] == [path.name], "temporary files left"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])          # from the IHDR chunk
    image = mpimg.imread(path)
    assert image.shape[:2] == (height, width)
    assert min_hw[0] <= height <= max_hw[0] and min_hw[1] <= width <= max_hw[1], (height, width)
    assert image[..., :3].std() > 0.01, "the figure is blank"
    return image


@pytest.fixture
def figures(monkeypatch):
    """The Figure objects the plots save, to look inside them."""
    saved = []
    real_save = viz.common._save

    def save(fig, path):
        saved.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(viz.common, "_save", save)
    return saved


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def segmentation_data(n=4, size=16):
    images = rng.random((n, 3, size, size)).astype(np.float32)
    images[:, 2] = 0.0                                        # blue is zero, as in WARWICK
    masks = (rng.random((n, 1, size, size)) > 0.5).astype(np.float32)
    return images, masks, rng.random((n, 1, size, size)).astype(np.float32)


# ----------------------------------------------------------------------------- each plot

def test_plot_curves(tmp_path, figures):
    history = {"train_loss": [1.0, 0.6, 0.4], "test_loss": [1.1, 0.7, 0.5],
               "train_accuracy": [0.7, 0.8, 0.9], "test_accuracy": [0.6, 0.75, 0.85]}
    out = viz.plot_curves(history, tmp_path / "curves.png", title="MLP")
    assert out == tmp_path / "curves.png"
    assert read_png(out).shape[:2] == (400, 1100)
    loss_ax, other_ax = figures[0].axes
    assert {line.get_label() for line in loss_ax.lines} == {"train_loss", "test_loss"}
    assert {line.get_label() for line in other_ax.lines} == {"train_accuracy", "test_accuracy"}


def test_plot_curves_loss_only_and_one_epoch(tmp_path, figures):
    read_png(viz.plot_curves({"loss": [0.5]}, tmp_path / "c.png"))
    assert len(figures[0].axes) == 1


@pytest.mark.parametrize("shape", [(10, 784), (784, 10)])
def test_plot_weight_images_linear_classifier(tmp_path, figures, shape):
    read_png(viz.plot_weight_images(rng.normal(size=shape), tmp_path / "w.png"))
    assert texts(figures[0]) == [str(d) for d in range(10)]


def test_plot_weight_images_mlp_filters_and_tensor(tmp_path, figures):
    weights = Tensor(rng.normal(size=(100, 784)).astype(np.float32))
    read_png(viz.plot_weight_images(weights, tmp_path / "w.png"))
    assert len(figures[0].axes[0].images) == 64                # the first 64 of 100
    assert "64 of 100" in figures[0].get_suptitle()


def test_plot_weight_images_survives_nan(tmp_path):
    w = rng.normal(size=(10, 784))
    w[3, :100] = np.nan
    read_png(viz.plot_weight_images(w, tmp_path / "w.png"))


def test_plot_confusion_matrix(tmp_path, figures):
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 2, 0])
    read_png(viz.plot_confusion_matrix(y_true, y_pred, tmp_path / "cm.png", n_classes=3,
                                       class_names=["a", "b", "c"]))
    np.testing.assert_array_equal(viz.confusion_matrix(y_true, y_pred, 3),
                                  [[1, 1, 0], [0, 1, 0], [1, 0, 2]])    # row = true label
    assert texts(figures[0]) == ["1", "1", "0", "0", "1", "0", "1", "0", "2"]


def test_plot_image_grid(tmp_path, figures):
    titles = [f"true {i}, pred {9 - i} (0.98)" for i in range(5)]
    read_png(viz.plot_image_grid(rng.random((5, 784)), tmp_path / "g.png", titles=titles),
             min_hw=(100, 400))
    assert texts(figures[0]) == titles


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 1, 28, 28), (3, 28, 28, 3), (3, 3, 28, 28)])
def test_plot_image_grid_layouts(tmp_path, shape):
    images = (rng.random(shape) * 255).astype(np.uint8)
    read_png(viz.plot_image_grid(images, tmp_path / "g.png"), min_hw=(100, 300))


def test_plot_segmentation_grid_rows_sorted_worst_first(tmp_path, figures):
    images, masks, preds = segmentation_data(n=4)
    images[:, 0] = np.array([0.1, 0.2, 0.3, 0.4])[:, None, None]   # red tells images apart
    scores = np.array([0.9, 0.2, 0.5, 0.7])
    read_png(viz.plot_segmentation_grid(images, masks, preds[:, 0], scores, tmp_path / "s.png"),
             min_hw=(600, 400))
    ax = figures[0].axes[0]
    shown = [t for t in texts(figures[0]) if t.startswith("prediction")]
    assert shown == [f"prediction, Dice {s:.3f}" for s in (0.2, 0.5, 0.7, 0.9)]
    reds = [im.get_array()[0, 0, 0] for im in ax.images[::3]]      # the image column
    np.testing.assert_allclose(reds, [0.2, 0.3, 0.4, 0.1], rtol=1e-6)


def test_plot_segmentation_grid_max_rows_keeps_worst_and_best(tmp_path, figures):
    images, masks, preds = segmentation_data(n=6)
    scores = np.array([0.6, 0.1, 0.9, 0.3, 0.99, 0.5])
    viz.plot_segmentation_grid(images.transpose(0, 2, 3, 1), masks, preds, scores,
                               tmp_path / "s.png", max_rows=3)
    titles = [t for t in texts(figures[0]) if t.startswith("image")]
    assert titles[0] == "image #1" and titles[-1] == "image #4" and len(titles) == 3


def test_plot_overlays(tmp_path):
    images, masks, preds = segmentation_data(n=3, size=32)
    read_png(viz.plot_overlays(images, preds, tmp_path / "o.png", masks=masks))


def test_plot_overlays_empty_prediction(tmp_path):
    images, masks, _ = segmentation_data(n=2, size=32)
    read_png(viz.plot_overlays(images, np.zeros((2, 32, 32)), tmp_path / "o.png"),
             min_hw=(150, 300))


def test_plot_predicted_vs_actual(tmp_path, figures):
    y = rng.normal(100, 30, size=50)
    read_png(viz.plot_predicted_vs_actual(y, (y + 5)[:, None], tmp_path / "r.png"))
    title = figures[0].axes[0].get_title()
    assert "RMSE 5" in title and "MAE 5" in title


# ----------------------------------------------------------------------------- draw_graph

def test_draw_graph(tmp_path, figures):
    a = Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    b = Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    loss = (a * b + a).tanh().sum()
    read_png(viz.draw_graph(loss, tmp_path / "graph.png"), min_hw=(100, 600))
    labels = texts(figures[0])
    for op in ("Mul", "Add", "Tanh", "Sum"):
        assert labels.count(op) == 1
    assert labels.count("(3, 4)") == 5          # a, b and three intermediate results
    assert labels.count("scalar") == 1
    loss.backward()                             # drawing left the graph intact
    np.testing.assert_allclose(a.grad.data, (1 - np.tanh(a.data * b.data + a.data) ** 2)
                               * (b.data + 1))


def test_draw_graph_after_backward_says_why(tmp_path):
    a = Tensor(np.ones(3), requires_grad=True)
    loss = (a * 2.0).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="draw_graph: .*before calling backward"):
        viz.draw_graph(loss, tmp_path / "g.png")
    assert list(tmp_path.iterdir()) == []


def test_draw_graph_of_a_leaf_and_of_a_long_chain(tmp_path):
    read_png(viz.draw_graph(Tensor(np.ones(2), requires_grad=True), tmp_path / "a" / "leaf.png"),
             min_hw=(100, 100))
    x = Tensor(np.ones(2), requires_grad=True)
    for _ in range(300):                        # no recursion: a long chain is fine...
        x = x * 1.0
    with pytest.raises(ValueError, match="draw_graph: .*too many"):   # ...but not drawable
        viz.draw_graph(x, tmp_path / "b" / "chain.png")


# ----------------------------------------------------------------------------- errors

BAD_CALLS = {
    "plot_curves": lambda p: viz.plot_curves({"loss": [[1, 2], [3, 4]]}, p),
    "plot_weight_images": lambda p: viz.plot_weight_images(np.zeros((10, 783)), p),
    "plot_confusion_matrix": lambda p: viz.plot_confusion_matrix(np.zeros(5, int),
                                                                 np.zeros((5, 10)), p),
    "plot_image_grid": lambda p: viz.plot_image_grid(np.zeros((2, 5, 28, 28)), p),
    "plot_segmentation_grid": lambda p: viz.plot_segmentation_grid(
        np.zeros((2, 3, 8, 8)), np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 8, 9)), [0, 1], p),
    "plot_overlays": lambda p: viz.plot_overlays(np.zeros((2, 3, 8, 8)), np.zeros((3, 8, 8)), p),
    "plot_predicted_vs_actual": lambda p: viz.plot_predicted_vs_actual(np.zeros(4),
                                                                       np.zeros(5), p),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_shapes_name_the_function_and_the_shapes(tmp_path, name):
    with pytest.raises(ValueError, match=rf"^{name}: .*shape.*\(") as info:
        BAD_CALLS[name](tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []
    print(info.value)


def test_other_bad_inputs(tmp_path):
    images, masks, preds = segmentation_data(n=3)
    with pytest.raises(ValueError, match=r"plot_segmentation_grid: scores .*\(3,\).*\(2,\)"):
        viz.plot_segmentation_grid(images, masks, preds, [0.1, 0.2], tmp_path / "s.png")
    with pytest.raises(ValueError, match="plot_confusion_matrix: y_pred .*labels 0..9"):
        viz.plot_confusion_matrix([1, 2], [1, 10], tmp_path / "c.png")
    with pytest.raises(ValueError, match="plot_image_grid: got 1 titles for 2 images"):
        viz.plot_image_grid(np.zeros((2, 8, 8)), tmp_path / "g.png", titles=["x"])
    with pytest.raises(ValueError, match="plot_curves: every series in history is empty"):
        viz.plot_curves({"loss": []}, tmp_path / "c.png")


def test_a_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "curves.png"
    viz.plot_curves({"loss": [1.0, 0.5]}, target)
    good = target.read_bytes()

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(PNG_SIGNATURE + b"half a picture")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        viz.plot_curves({"loss": [1.0, 0.2]}, target)
    assert target.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    with pytest.raises(OSError, match="disk full"):
        viz.plot_curves({"loss": [1.0]}, tmp_path / "new.png")
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
