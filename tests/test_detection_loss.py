"""YOLO targets, the loss (each term gradchecked), decoding, and the initial loss value."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_uu as tg
from tinygrad_uu.detection.loss import expected_initial_terms, yolo_loss, yolo_loss_terms
from tinygrad_uu.detection.targets import build_targets, decode, postprocess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import detection as example  # noqa: E402

ANCHORS = [np.array([[4.0, 4], [8, 6]]), np.array([[12.0, 12], [20, 16]])]
STRIDES = (8, 16)


def small_case(seed=0, n=2, num_classes=3, image=32):
    rng = np.random.default_rng(seed)
    boxes, labels = [], []
    for i in range(n):
        k = 0 if i == n - 1 else 3                       # the last image has no boxes
        xy = rng.uniform(0, image - 22, (k, 2))
        wh = rng.uniform(3, 20, (k, 2))
        boxes.append(np.concatenate([xy, xy + wh], 1))
        labels.append(rng.integers(0, num_classes, k))
    return boxes, labels


def test_targets_put_each_box_on_its_best_anchor_and_cell():
    boxes = [np.array([[1.0, 2, 5, 6], [17, 1, 37, 17]])]      # a 4x4 box and a 20x16 box
    t8, t16 = build_targets(boxes, [np.array([2, 1])], ANCHORS, STRIDES, (48, 48))
    assert t8.objectness.shape == (1, 2, 6, 6) and t16.objectness.shape == (1, 2, 3, 3)
    # 4x4 -> anchor 0 of the stride-8 head, cell (0, 0); centre (3, 4) -> offsets (3/8, 4/8)
    assert t8.objectness.sum() == 1 and t8.objectness[0, 0, 0, 0] == 1
    np.testing.assert_allclose(t8.xy, [[3 / 8, 4 / 8]])
    np.testing.assert_allclose(t8.wh, [[0, 0]], atol=1e-7)
    assert t8.classes.tolist() == [2]
    # 20x16 -> anchor 1 of the stride-16 head; centre (27, 9) -> cell (x 1, y 0)
    assert t16.objectness[0, 1, 0, 1] == 1 and t16.objectness.sum() == 1
    np.testing.assert_allclose(t16.xy, [[27 / 16 - 1, 9 / 16]])
    np.testing.assert_allclose(t16.wh, [[0, 0]], atol=1e-7)
    assert t16.index.tolist() == [np.ravel_multi_index((0, 1, 0, 1), (1, 2, 3, 3))]
    with pytest.raises(ValueError, match="not divisible by stride 16"):
        build_targets(boxes, [np.array([2, 1])], ANCHORS, STRIDES, (40, 40))


def test_targets_ignore_and_extra_matches():
    boxes, labels = [np.array([[0.0, 0, 10, 8]])], [np.array([0])]
    plain = build_targets(boxes, labels, ANCHORS, STRIDES, (32, 32))
    assert sum(len(t.index) for t in plain) == 1 and all(t.weight.all() for t in plain)
    ignored = build_targets(boxes, labels, ANCHORS, STRIDES, (32, 32), ignore_iou=0.15)
    assert ignored[0].weight[0, 0, 0, 0] == 0 and ignored[0].weight[0, 1, 0, 0] == 1  # best: positive
    extra = build_targets(boxes, labels, ANCHORS, STRIDES, (32, 32), extra_match_iou=0.3)
    assert sum(len(t.index) for t in extra) == 2


def test_decoding_the_targets_gives_the_boxes_back():
    boxes, labels = small_case(seed=3, n=2, num_classes=3, image=32)
    targets = build_targets(boxes, labels, ANCHORS, STRIDES, (32, 32))
    for t, anchors, stride in zip(targets, ANCHORS, STRIDES):
        n, a, gh, gw = t.objectness.shape
        raw = np.zeros((n, a, 8, gh, gw))
        idx = np.unravel_index(t.index, t.objectness.shape)
        logit = lambda p: np.log(p / (1 - p))  # noqa: E731
        raw[idx[0], idx[1], 0, idx[2], idx[3]] = logit(t.xy[:, 0].astype(np.float64))
        raw[idx[0], idx[1], 1, idx[2], idx[3]] = logit(t.xy[:, 1].astype(np.float64))
        raw[idx[0], idx[1], 2, idx[2], idx[3]] = t.wh[:, 0]
        raw[idx[0], idx[1], 3, idx[2], idx[3]] = t.wh[:, 1]
        decoded, _, _ = decode(raw.reshape(n, a * 8, gh, gw), anchors, stride, 3)
        flat = np.ravel_multi_index((idx[1], idx[2], idx[3]), (a, gh, gw))
        found = decoded[idx[0], flat]
        every = np.concatenate(boxes)
        for box in found:                                # each decoded box is one of the inputs
            assert np.abs(every - box).max(axis=1).min() < 1e-4


@pytest.mark.parametrize("term", ["box", "obj", "noobj", "cls"])
def test_each_loss_term_passes_gradcheck(term):
    boxes, labels = small_case(seed=1, n=2, num_classes=3, image=32)
    targets = build_targets(boxes, labels, ANCHORS, STRIDES, (32, 32), ignore_iou=0.5)
    rng = np.random.default_rng(0)
    raws = [tg.tensor(rng.normal(0, 1, (2, 2 * 8, 32 // s, 32 // s)), requires_grad=True)
            for s in STRIDES]
    assert all(len(t.index) for t in targets)            # both heads have positives
    tg.gradcheck(lambda a, b: yolo_loss_terms([a, b], targets, 3)[term], *raws)


def test_weighted_total_is_the_sum_of_the_terms():
    boxes, labels = small_case(seed=2)
    targets = build_targets(boxes, labels, ANCHORS, STRIDES, (32, 32))
    raws = [tg.tensor(np.random.default_rng(1).normal(0, 1, (2, 16, 32 // s, 32 // s)))
            for s in STRIDES]
    weights = {"box": 2.0, "obj": 3.0, "noobj": 0.5, "cls": 4.0}
    total, terms = yolo_loss(raws, targets, 3, weights)
    assert total.item() == pytest.approx(sum(weights[k] * terms[k] for k in terms), rel=1e-6)
    with pytest.raises(ValueError, match="unknown weights"):
        yolo_loss(raws, targets, 3, {"iou": 1.0})
    with pytest.raises(ValueError, match="needs 16 channels"):
        yolo_loss([raws[0][:, :12], raws[1]], targets, 3)


def test_batch_of_empty_images_has_only_background_loss():
    targets = build_targets([np.zeros((0, 4))] * 2, [np.zeros(0, int)] * 2, ANCHORS, STRIDES, (32, 32))
    raws = [tg.tensor(np.zeros((2, 16, 32 // s, 32 // s)), requires_grad=True) for s in STRIDES]
    terms = yolo_loss_terms(raws, targets, 3)
    assert terms["box"].item() == 0 and terms["cls"].item() == 0 and terms["obj"].item() == 0
    # every anchor is a negative at logit 0: log 2 each, per image
    assert terms["noobj"].item() == pytest.approx(math.log(2) * 2 * (16 + 4))
    terms["noobj"].backward()
    assert np.isfinite(raws[0].grad.data).all()


@pytest.mark.parametrize("zero_weights", [True, False])
def test_untrained_model_loss_is_what_its_initialisation_predicts(zero_weights):
    """The head's biases set objectness to the prior and classes uniform; with its weights
    at 0 the loss is exactly ``expected_initial_terms``; with the default small weights
    (std 0.01) it is within a few percent."""
    tg.manual_seed(0)
    prior = 0.02
    model = example.build_model(num_classes=3, in_channels=1, anchors=ANCHORS, strides=STRIDES,
                                width=4, prior=prior)
    if zero_weights:
        for head, _ in model._heads():
            head.weight.data[...] = 0
    boxes, labels = small_case(seed=4, n=4, num_classes=3, image=64)
    targets = build_targets(boxes, labels, ANCHORS, STRIDES, (64, 64))
    images = np.random.default_rng(0).random((4, 1, 64, 64), dtype=np.float32)
    _, terms = yolo_loss(model(tg.tensor(images)), targets, 3)
    expected = expected_initial_terms(targets, prior, 3)
    for key in terms:
        assert terms[key] == pytest.approx(expected[key], rel=1e-5 if zero_weights else 0.05), key


def test_postprocess_keeps_confident_boxes_and_suppresses_duplicates():
    anchors, stride = np.array([[8.0, 8]]), 8
    raw = np.full((1, 1, 7, 2, 2), -10.0)                   # 1 anchor, 2 classes, 2x2 cells
    raw[0, 0, :4] = 0                                       # boxes of anchor size at centres
    raw[0, 0, 4, 0, 0] = raw[0, 0, 4, 0, 1] = 5             # two confident cells
    raw[0, 0, 5:, 0, 0] = [4, 0]                            # class 0
    raw[0, 0, 5:, 0, 1] = [0, 4]                            # class 1
    found = postprocess([raw.reshape(1, 7, 2, 2)], [anchors], [stride], 2, (16, 16), conf=0.5)[0]
    assert found["labels"].tolist() == [0, 1]
    np.testing.assert_allclose(found["boxes"], [[0, 0, 8, 8], [8, 0, 16, 8]], atol=1e-5)
    # one class, the second box moved left to overlap the first by IoU 1/3: NMS at 0.3
    # keeps the better one, at 0.5 both
    raw[0, 0, 5:, 0, 1] = [4, 0]
    raw[0, 0, 0, 0, 1] = -30                                # centre x = 8: box (4, 0, 12, 8)
    raw[0, 0, 4, 0, 1] = 4                                  # a little less confident
    found = postprocess([raw.reshape(1, 7, 2, 2)], [anchors], [stride], 2, (16, 16), conf=0.5,
                        iou=0.3)[0]
    np.testing.assert_allclose(found["boxes"], [[0, 0, 8, 8]], atol=1e-5)
    assert len(postprocess([raw.reshape(1, 7, 2, 2)], [anchors], [stride], 2, (16, 16),
                           conf=0.5, iou=0.5)[0]["scores"]) == 2
