"""tinygrad_uu.metrics: Dice, IoU, pixel accuracy and accuracy, checked on values by hand."""
import numpy as np
import pytest

from tinygrad_uu import Tensor, metrics

# Two 2x3 images. Image 0: TP 2, FP 1, FN 1, TN 2. Image 1: TP 0, FP 0, FN 2, TN 4.
PRED = np.array([[[1, 1, 1],
                  [0, 0, 0]],
                 [[0, 0, 0],
                  [0, 0, 0]]], dtype=np.float32)
TRUE = np.array([[[1, 1, 0],
                  [1, 0, 0]],
                 [[0, 0, 0],
                  [0, 1, 1]]], dtype=np.float32)
DICE = [2 * 2 / (2 * 2 + 1 + 1), 0.0]          # 2/3, 0
IOU = [2 / (2 + 1 + 1), 0.0]                   # 1/2, 0
PIXEL = [4 / 6, 4 / 6]


def test_counts_by_hand():
    c = metrics.confusion_counts(PRED, TRUE)
    for key, expected in {"tp": [2, 0], "fp": [1, 0], "fn": [1, 2], "tn": [2, 4]}.items():
        np.testing.assert_array_equal(c[key], expected)


@pytest.mark.parametrize("fn, expected", [(metrics.dice, DICE), (metrics.iou, IOU),
                                          (metrics.pixel_accuracy, PIXEL)])
def test_per_image_and_mean_by_hand(fn, expected):
    np.testing.assert_allclose(fn(PRED, TRUE, reduction="none"), expected)
    assert fn(PRED, TRUE) == pytest.approx(np.mean(expected))
    assert isinstance(fn(PRED, TRUE), float)


def test_segmentation_scores_gives_all_three():
    s = metrics.segmentation_scores(PRED, TRUE)
    np.testing.assert_allclose(s["dice"], DICE)
    np.testing.assert_allclose(s["iou"], IOU)
    np.testing.assert_allclose(s["pixel_accuracy"], PIXEL)


def test_probabilities_logits_bool_and_channel_axis_agree():
    probs = np.where(PRED > 0, 0.8, 0.3)
    logits = np.log(probs / (1 - probs))
    expected = metrics.dice(PRED, TRUE, reduction="none")
    for pred, options in ((probs, {}), (logits, {"from_logits": True}), (PRED > 0, {}),
                          (Tensor(probs), {})):
        np.testing.assert_allclose(metrics.dice(pred, TRUE, reduction="none", **options), expected)
    # (N, 1, H, W) is the same as (N, H, W): one image per row of the first axis
    np.testing.assert_allclose(metrics.dice(probs[:, None], TRUE[:, None], reduction="none"),
                               expected)


def test_threshold():
    probs = np.array([[0.2, 0.6, 0.9]])
    truth = np.array([[0, 1, 1]])
    assert metrics.dice(probs, truth) == 1.0                       # > 0.5: pixels 1 and 2
    assert metrics.dice(probs, truth, threshold=0.7) == pytest.approx(2 / 3)  # pixel 2 only
    logits = np.log(probs / (1 - probs))
    assert metrics.dice(logits, truth, threshold=0.7, from_logits=True) == pytest.approx(2 / 3)
    assert metrics.binarize(np.array([0.5])).tolist() == [False]   # strictly greater
    with pytest.raises(ValueError, match="threshold"):
        metrics.dice(probs, truth, threshold=1.0)


def test_empty_masks():
    empty = np.zeros((1, 4, 4))
    some = empty.copy()
    some[0, 1, 1] = 1
    # both empty: a perfect segmentation
    assert metrics.dice(empty, empty) == 1.0 and metrics.iou(empty, empty) == 1.0
    assert metrics.pixel_accuracy(empty, empty) == 1.0
    # only one empty: no overlap at all
    assert metrics.dice(some, empty) == 0.0 and metrics.iou(empty, some) == 0.0
    assert metrics.pixel_accuracy(some, empty) == pytest.approx(15 / 16)


def test_iou_is_dice_over_two_minus_dice():
    rng = np.random.default_rng(0)
    p, t = rng.random((20, 8, 8)), rng.random((20, 8, 8)) < 0.3
    d = metrics.dice(p, t, reduction="none")
    np.testing.assert_allclose(metrics.iou(p, t, reduction="none"), d / (2 - d))


def test_uint8_masks_with_255():
    truth = (TRUE * 255).astype(np.uint8)
    np.testing.assert_allclose(metrics.dice(PRED, truth, reduction="none"), DICE)


def test_segmentation_errors():
    with pytest.raises(ValueError, match=r"\(2, 2, 3\).*\(2, 6\)"):
        metrics.dice(PRED, TRUE.reshape(2, 6))
    with pytest.raises(ValueError, match="one image per row"):
        metrics.iou(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="reduction"):
        metrics.dice(PRED, TRUE, reduction="sum")


def test_classification_accuracy():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 1])
    assert metrics.accuracy(scores, labels) == 0.5
    np.testing.assert_array_equal(metrics.accuracy(scores, labels, reduction="none"),
                                  [True, True, False, False])
    assert metrics.accuracy(np.array([1, 0, 1, 1]), labels) == 0.75   # predicted labels
    assert metrics.accuracy(Tensor(scores), labels) == 0.5
    with pytest.raises(ValueError, match="labels of shape"):
        metrics.accuracy(scores, labels[:3])
