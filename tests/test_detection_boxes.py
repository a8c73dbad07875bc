"""Box formats, IoU, NMS and k-means anchors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_uu.detection import (anchor_fitness, batched_nms, box_area, box_convert, box_iou,
                                   check_boxes, denormalize_boxes, kmeans_anchors, nms,
                                   normalize_boxes, wh_iou)


def random_boxes(rng, n, scale=100.0):
    xy = rng.uniform(0, scale, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0.5, scale / 2, (n, 2))], 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 12))
def test_formats_round_trip(seed, n):
    rng = np.random.default_rng(seed)
    b = random_boxes(rng, n)
    for fmt in ("xywh", "cxcywh"):
        there = box_convert(b, "xyxy", fmt)
        np.testing.assert_allclose(box_convert(there, fmt, "xyxy"), b, rtol=1e-12, atol=1e-12)
        for other in ("xywh", "cxcywh"):
            np.testing.assert_allclose(box_convert(box_convert(there, fmt, other), other, fmt),
                                       there, atol=1e-12)
    w, h = rng.uniform(10, 500, 2)
    np.testing.assert_allclose(denormalize_boxes(normalize_boxes(b, w, h), w, h), b, atol=1e-12)


def test_formats_by_hand():
    xyxy = np.array([[2.0, 3, 10, 7]])
    np.testing.assert_array_equal(box_convert(xyxy, "xyxy", "xywh"), [[2, 3, 8, 4]])
    np.testing.assert_array_equal(box_convert(xyxy, "xyxy", "cxcywh"), [[6, 5, 8, 4]])
    np.testing.assert_array_equal(normalize_boxes([[6, 5, 8, 4]], 12, 10), [[0.5, 0.5, 8 / 12, 0.4]])
    assert box_area(xyxy)[0] == 32
    with pytest.raises(ValueError, match="format"):
        box_convert(xyxy, "xyxy", "yolo")
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        box_convert(np.zeros((2, 3)), "xyxy", "xywh")


def iou_by_hand(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 6), st.integers(0, 6))
def test_box_iou_against_a_loop(seed, n, m):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, n, 30), random_boxes(rng, m, 30)
    expected = np.array([[iou_by_hand(x, y) for y in b] for x in a]).reshape(n, m)
    np.testing.assert_allclose(box_iou(a, b), expected, atol=1e-12)


def test_box_iou_cases():
    a = np.array([[0.0, 0, 10, 10]])
    assert box_iou(a, a)[0, 0] == 1
    assert box_iou(a, [[10.0, 0, 20, 10]])[0, 0] == 0           # touching: no overlap
    assert box_iou(a, [[5.0, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert box_iou(a, [[2.0, 2, 4, 4]])[0, 0] == pytest.approx(4 / 100)   # inside
    assert box_iou(np.zeros((1, 4)), np.zeros((1, 4)))[0, 0] == 0        # empty boxes: 0, not NaN


def test_wh_iou_is_centred_box_iou():
    rng = np.random.default_rng(1)
    wh1, wh2 = rng.uniform(1, 50, (5, 2)), rng.uniform(1, 50, (4, 2))
    centred = lambda wh: np.concatenate([-wh / 2, wh / 2], 1)  # noqa: E731
    np.testing.assert_allclose(wh_iou(wh1, wh2), box_iou(centred(wh1), centred(wh2)), atol=1e-12)


def nms_by_pairs(boxes, scores, threshold):
    """The definition, pair by pair: a slow reference."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(iou_by_hand(boxes[i], boxes[k]) <= threshold for k in keep):
            keep.append(i)
    return keep


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 40), st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_against_the_pairwise_definition(seed, n, threshold):
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, n, 40), rng.random(n)
    assert nms(boxes, scores, threshold).tolist() == nms_by_pairs(boxes, scores, threshold)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 40))
def test_batched_nms_is_nms_per_class(seed, n):
    rng = np.random.default_rng(seed)
    boxes, scores, classes = random_boxes(rng, n, 40), rng.random(n), rng.integers(0, 3, n)
    kept = batched_nms(boxes, scores, classes, 0.5)
    expected = []
    for c in range(3):
        idx = np.flatnonzero(classes == c)
        expected += idx[nms(boxes[idx], scores[idx], 0.5)].tolist()
    assert sorted(kept.tolist()) == sorted(expected)
    assert np.all(np.diff(scores[kept]) <= 0)                  # best first


def test_kmeans_anchors_find_clusters_and_beat_random_sizes():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 12], [30, 18], [20, 40]])
    wh = np.concatenate([c * rng.uniform(0.9, 1.1, (200, 2)) for c in centres])
    anchors = kmeans_anchors(wh, 3, seed=1)
    # sorted by area, each near one of the true centres
    assert np.all(np.diff(anchors.prod(1)) > 0)
    np.testing.assert_allclose(anchors, centres[np.argsort(centres.prod(1))], rtol=0.05)
    assert anchor_fitness(wh, anchors) > 0.9 > anchor_fitness(wh, rng.uniform(5, 50, (3, 2)))
    with pytest.raises(ValueError, match="2 boxes cannot make 3 anchors"):
        kmeans_anchors(wh[:2], 3)
    with pytest.raises(ValueError, match="positive"):
        kmeans_anchors(np.array([[1.0, 0], [2, 2], [3, 3]]), 2)


def test_check_boxes_names_the_image():
    ok, labels = check_boxes([[1, 2, 3, 4]], [2], 3, "a.png")
    assert ok.dtype == np.float32 and labels.tolist() == [2]
    assert check_boxes(np.zeros((0, 4)), [], 3, "a.png")[0].shape == (0, 4)
    with pytest.raises(ValueError, match="a.png: box 0 .* zero or negative width"):
        check_boxes([[3, 2, 3, 4]], [0], 3, "a.png")
    with pytest.raises(ValueError, match="b.png: box 1 has a NaN"):
        check_boxes([[1, 2, 3, 4], [np.nan, 0, 1, 1]], [0, 0], 3, "b.png")
    with pytest.raises(ValueError, match="c.png: box 0 has class id 3, outside the 3 classes"):
        check_boxes([[1, 2, 3, 4]], [3], 3, "c.png")
    with pytest.raises(ValueError, match="d.png: box 0 .* outside the 8x8 image"):
        check_boxes([[1, 2, 9, 4]], [0], 3, "d.png", image_size=(8, 8))
