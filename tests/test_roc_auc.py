"""metrics.roc_auc, roc_curve, binary_accuracy and bootstrap_auc: by hand and against
scikit-learn on random cases, with and without ties."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_uu import Tensor, metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_auc_by_hand_with_a_tie():
    # positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4) (0.9>0.1) (0.4=0.4 -> 1/2) (0.4>0.1)
    assert metrics.roc_auc([0.9, 0.4, 0.4, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert metrics.roc_auc([0.1, 0.2], [1, 0]) == 0.0
    assert metrics.roc_auc([5.0, 5.0, 5.0], [1, 0, 1]) == 0.5          # all tied


def case(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]                                         # both classes
    scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    if ties:                                                           # few distinct values
        scores = np.round(scores * 2) / 2
    return scores, labels


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 300), ties=st.booleans())
def test_auc_matches_sklearn(seed, n, ties):
    scores, labels = case(seed, n, ties)
    expected = sklearn_metrics.roc_auc_score(labels, scores)
    assert metrics.roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert metrics.roc_auc(Tensor(scores.astype(np.float32)), labels.astype(np.float32)) == \
        pytest.approx(sklearn_metrics.roc_auc_score(labels, scores.astype(np.float32)), abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 200), ties=st.booleans())
def test_weighted_auc_matches_sklearn_and_repeated_rows(seed, n, ties):
    scores, labels = case(seed, n, ties)
    counts = np.random.default_rng(seed + 1).integers(0, 4, size=n)
    counts[:2] = 1
    expected = sklearn_metrics.roc_auc_score(labels, scores, sample_weight=counts)
    weighted = metrics.roc_auc(scores, labels, sample_weight=counts)
    assert weighted == pytest.approx(expected, abs=1e-12)
    repeated = np.repeat(np.arange(n), counts)                         # weight k == k copies
    assert metrics.roc_auc(scores[repeated], labels[repeated]) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 200), ties=st.booleans())
def test_roc_curve_matches_sklearn_and_its_area_is_the_auc(seed, n, ties):
    scores, labels = case(seed, n, ties)
    fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
    ref_fpr, ref_tpr, ref_thr = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_array_equal(thresholds[1:], ref_thr[1:])    # sklearn's first varies
    assert thresholds[0] == np.inf
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    assert area == pytest.approx(metrics.roc_auc(scores, labels), abs=1e-12)


def test_logits_rank_where_float32_sigmoids_tie():
    logits = np.array([20.0, 30.0, 25.0, 18.0], dtype=np.float32)
    labels = [0, 1, 1, 0]
    probs = 1 / (1 + np.exp(-logits))
    assert len(set(probs.tolist())) == 1                              # saturated: all 1.0
    assert metrics.roc_auc(probs, labels) == 0.5
    assert metrics.roc_auc(logits, labels) == 1.0


def test_one_class_gives_nan_with_a_warning():
    with pytest.warns(RuntimeWarning, match="only one class"):
        assert np.isnan(metrics.roc_auc([0.3, 0.7, 0.1], [1, 1, 1]))
    with pytest.warns(RuntimeWarning, match="only one class"):
        assert np.isnan(metrics.roc_auc([0.3, 0.7], [0, 0]))
    with pytest.raises(ValueError, match="needs both classes"):
        metrics.roc_curve([0.3, 0.7], [0, 0])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        metrics.roc_auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="labels must be 0 or 1, label 1 is 2"):
        metrics.roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="score 1 is nan"):
        metrics.roc_auc([0.1, np.nan], [0, 1])


def test_binary_accuracy_at_one_half():
    assert metrics.binary_accuracy([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]) == 0.5
    assert metrics.binary_accuracy([2.0, -1.0, 0.5, -3.0], [1, 0, 0, 0], from_logits=True) == 0.75
    assert metrics.binary_accuracy([0.9, 0.4], [True, False]) == 1.0


def grouped_case(seed, n_groups=30, per_group=20):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    separation = rng.uniform(-1, 3, size=n_groups)[groups]             # easy and hard images
    labels = rng.random(groups.size) < 0.5
    scores = labels * separation + rng.normal(size=groups.size)
    return scores, labels, groups


def test_bootstrap_equals_auc_of_the_resampled_groups():
    scores, labels, groups = grouped_case(0)
    ids = np.unique(groups)
    result = metrics.bootstrap_auc(scores, labels, groups, n_boot=40, seed=5)
    # the same draws, done by hand: concatenate the patches of each drawn group
    rng = np.random.default_rng(5)
    picks = rng.integers(0, len(ids), size=(40, len(ids)))
    by_hand = [metrics.roc_auc(*(np.concatenate([a[groups == ids[i]] for i in row])
                                 for a in (scores, labels))) for row in picks]
    low, high = np.quantile(by_hand, [0.025, 0.975])
    assert result["low"] == pytest.approx(low, abs=1e-12)
    assert result["high"] == pytest.approx(high, abs=1e-12)
    assert result["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores))
    assert result["n_groups"] == 30 and result["skipped"] == 0
    assert result["low"] < result["auc"] < result["high"]


def test_bootstrap_by_group_is_wider_than_by_patch():
    scores, labels, groups = grouped_case(1)
    by_image = metrics.bootstrap_auc(scores, labels, groups, n_boot=300)
    by_patch = metrics.bootstrap_auc(scores, labels, np.arange(len(scores)), n_boot=300)
    assert by_image["high"] - by_image["low"] > 1.5 * (by_patch["high"] - by_patch["low"])


def test_bootstrap_skips_one_class_resamples():
    scores = np.array([0.9, 0.8, 0.2, 0.1])
    labels = np.array([1, 1, 0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                 # no warning escapes
        result = metrics.bootstrap_auc(scores, labels, groups=[0, 0, 1, 1], n_boot=200)
    # two groups, one per class: half the resamples draw the same group twice
    assert 60 < result["skipped"] < 140
    assert result["low"] == result["high"] == 1.0
    with pytest.raises(ValueError, match="one group id"):
        metrics.bootstrap_auc(scores, labels, groups=[0, 1])
