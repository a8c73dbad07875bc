"""mAP against pycocotools (the reference) on random cases, and VOC all-point AP by hand."""
import contextlib
import io

import numpy as np
import pytest

from tinygrad_uu.detection import box_convert, mean_average_precision

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def random_case(rng, n_images, n_classes, empty_gt=0.2, empty_dt=0.2):
    """Ground truth and detections per image, in xyxy pixels, with some images empty.
    Detections are jittered copies of ground truth plus random boxes: IoUs spread over
    [0, 1] so that every threshold matters."""
    gts, dts = [], []
    for _ in range(n_images):
        k = 0 if rng.random() < empty_gt else rng.integers(1, 8)
        xy = rng.uniform(0, 100, (k, 2))
        wh = rng.uniform(2, 40, (k, 2))
        g = np.concatenate([xy, xy + wh], 1)
        gl = rng.integers(0, n_classes, k)
        gts.append({"boxes": g, "labels": gl})
        if rng.random() < empty_dt:
            dts.append({"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)})
            continue
        near = g[rng.integers(0, k, rng.integers(0, 2 * k + 1))] if k else np.zeros((0, 4))
        near = near + rng.normal(0, 3, near.shape)
        near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 0.5)
        m = rng.integers(0, 6)
        xy = rng.uniform(0, 100, (m, 2))
        far = np.concatenate([xy, xy + rng.uniform(2, 40, (m, 2))], 1)
        d = np.concatenate([near, far])
        dl = np.concatenate([gl[rng.integers(0, k, len(near))] if k else np.zeros(0, int),
                             rng.integers(0, n_classes, m)])
        flip = rng.random(len(dl)) < 0.15                           # some wrong classes
        dl[flip] = rng.integers(0, n_classes, flip.sum())
        dts.append({"boxes": d, "scores": rng.random(len(d)), "labels": dl})
    return gts, dts


def coco_eval(gts, dts, n_classes, max_dets=100):
    """pycocotools' AP50, AP50:95 and per-class AP (-1 for a class without ground truth)."""
    images = [{"id": i + 1, "width": 200, "height": 200} for i in range(len(gts))]
    anns = []
    for i, g in enumerate(gts):
        for box, label in zip(box_convert(g["boxes"], "xyxy", "xywh"), g["labels"]):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                         "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})
    results = [{"image_id": i + 1, "category_id": int(label) + 1, "bbox": box.tolist(),
                "score": float(score)}
               for i, d in enumerate(dts)
               for box, score, label in zip(box_convert(d["boxes"], "xyxy", "xywh"),
                                            d["scores"], d["labels"])]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)]}
        coco.createIndex()
        found = coco.loadRes(results)
        ev = COCOeval(coco, found, "bbox")
        ev.params.maxDets = [max_dets]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]          # (T, R, K), area "all", max dets
    valid = precision > -1                                    # summarize()'s rule
    ap50 = precision[0][valid[0]].mean() if valid[0].any() else -1
    ap = precision[valid].mean() if valid.any() else -1
    per_class = np.array([precision[:, :, k][precision[:, :, k] > -1].mean()
                          if (precision[:, :, k] > -1).any() else np.nan
                          for k in range(n_classes)])
    per_class50 = np.array([precision[0, :, k].mean() if (precision[0, :, k] > -1).all()
                            else np.nan for k in range(n_classes)])
    return ap50, ap, per_class50, per_class


@pytest.mark.parametrize("seed", range(20))
def test_map_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(1, 5))
    gts, dts = random_case(rng, int(rng.integers(3, 25)), n_classes)
    if not any(len(d["scores"]) for d in dts):                  # loadRes cannot take no results
        dts[0] = {"boxes": np.array([[1.0, 1, 5, 5]]), "scores": np.array([0.5]),
                  "labels": np.array([0])}
    ours = mean_average_precision(dts, gts, n_classes)
    ap50, ap, per50, per = coco_eval(gts, dts, n_classes)
    if np.isnan(ours["ap50"]):
        assert ap50 == -1 and ap == -1
        return
    assert ours["ap50"] == pytest.approx(ap50, abs=1e-6)
    assert ours["ap50_95"] == pytest.approx(ap, abs=1e-6)
    np.testing.assert_allclose(ours["per_class_ap50"], per50, atol=1e-6)
    np.testing.assert_allclose(ours["per_class_ap50_95"], per, atol=1e-6)


def test_max_dets_cuts_the_lowest_scores_like_pycocotools():
    rng = np.random.default_rng(42)
    gts, dts = random_case(rng, 6, 2, empty_gt=0, empty_dt=0)
    # many low-scoring extra detections: the cut at 3 per image and class changes the AP
    for d in dts:
        extra = rng.uniform(0, 100, (30, 2))
        d["boxes"] = np.concatenate([d["boxes"], np.concatenate([extra, extra + 10], 1)])
        d["scores"] = np.concatenate([d["scores"], rng.uniform(0, 1, 30)])
        d["labels"] = np.concatenate([d["labels"], rng.integers(0, 2, 30)])
    ours = mean_average_precision(dts, gts, 2, max_dets=3)
    ap50, ap, _, _ = coco_eval(gts, dts, 2, max_dets=3)
    assert ours["ap50"] == pytest.approx(ap50, abs=1e-6)
    assert ours["ap50_95"] == pytest.approx(ap, abs=1e-6)
    assert mean_average_precision(dts, gts, 2, max_dets=100)["ap50"] != pytest.approx(ours["ap50"])


def test_perfect_detections_score_one_and_false_positives_on_empty_images_count():
    gt = {"boxes": np.array([[10.0, 10, 30, 30], [50, 50, 70, 90]]), "labels": np.array([0, 1])}
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}
    perfect = {"boxes": gt["boxes"], "scores": np.array([0.9, 0.8]), "labels": gt["labels"]}
    none = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    r = mean_average_precision([perfect, none], [gt, empty], 2)
    # (1 - 1e-16: pycocotools divides by tp + fp + the spacing of 1, and so do we)
    assert r["ap50"] == pytest.approx(1.0) and r["ap50_95"] == pytest.approx(1.0)
    # a confident false positive on the empty image ranks above the true positive of class 0
    fp = {"boxes": np.array([[0.0, 0, 20, 20]]), "scores": np.array([0.95]), "labels": np.array([0])}
    r = mean_average_precision([perfect, fp], [gt, empty], 2)
    assert r["per_class_ap50"][1] == pytest.approx(1.0)
    # precision 1/2 at recall 1 for class 0 -> 0.5 at every one of the 101 recall points
    assert r["per_class_ap50"][0] == pytest.approx(0.5)
    # a class with no ground truth has no AP and is left out of the mean
    r = mean_average_precision([perfect], [gt], 3)
    assert np.isnan(r["per_class_ap50"][2]) and r["ap50"] == pytest.approx(1.0)


def test_voc_all_point_ap_by_hand():
    # 3 ground-truth boxes; detections in score order: TP, FP, TP, FP; one box never found
    g = np.array([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    d = np.array([[0.0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 30, 30], [80, 80, 90, 90]])
    gt = {"boxes": g, "labels": np.zeros(3, int)}
    dt = {"boxes": d, "scores": np.array([0.9, 0.8, 0.7, 0.6]), "labels": np.zeros(4, int)}
    r = mean_average_precision([dt], [gt], 1, interpolation="voc")
    # recall steps 1/3 at precision 1 and 1/3 at precision 2/3
    assert r["ap50"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    coco = mean_average_precision([dt], [gt], 1)["ap50"]
    # 101-point: recalls 0..0.33 (34 points) at 1, 0.34..0.66 (33 points) at 2/3
    assert coco == pytest.approx((34 * 1 + 33 * 2 / 3) / 101)


def test_bad_input_is_named():
    gt = {"boxes": np.zeros((1, 4)), "labels": np.array([5])}
    dt = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    with pytest.raises(ValueError, match="image 0"):
        mean_average_precision([dt], [gt], 2)
    with pytest.raises(ValueError, match="1 prediction entries for 2 images"):
        mean_average_precision([dt], [gt, gt], 2)
    with pytest.raises(ValueError, match="interpolation"):
        mean_average_precision([dt], [gt], 6, interpolation="11pt")
