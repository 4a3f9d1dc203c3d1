import math

import numpy as np
import pytest

from keyvid.eval.ap import (
    average_precision,
    average_precision_from_curves,
    clip_match_rate,
    curve_peaks,
    onset_scores,
)


def test_clip_match_rate_by_hand():
    true, pred = [10, 20, 40], [12, 23]
    # distances to the nearest prediction: 2, 3, 17
    assert clip_match_rate(pred, true, 1) == 0.0
    assert clip_match_rate(pred, true, 2) == pytest.approx(1 / 3)  # |d| <= t counts
    assert clip_match_rate(pred, true, 3) == pytest.approx(2 / 3)
    assert clip_match_rate(pred, true, 17) == 1.0
    # no one-to-one assignment: one prediction can match several true keypoints
    assert clip_match_rate([15], [13, 17], 2) == 1.0
    # predictions far from any truth do not lower the score (it is a recall over true keypoints)
    assert clip_match_rate([10, 30, 31, 32], [10], 0) == 1.0
    assert clip_match_rate([], [5], 5) == 0.0
    assert clip_match_rate([5], [], 5) is None


def test_average_over_clips_and_thresholds():
    preds = [[12, 23], [0, 47], []]
    trues = [[10, 20, 40], [3, 44], [7]]
    res = average_precision(preds, trues)
    assert set(res.ap) == {2, 3, 5}
    assert res.ap[2] == pytest.approx((1 / 3 + 0 + 0) / 3)
    assert res.ap[3] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert res.ap[5] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert res.num_clips == 3 and res.num_skipped == 0


def test_clip_without_true_keypoints():
    preds = [[10], [5, 30]]
    trues = [[10], []]
    # default: left out of the mean, and reported
    res = average_precision(preds, trues)
    assert res.ap[3] == 1.0 and res.num_clips == 1 and res.num_skipped == 1
    # upstream scores such a clip 0.5
    up = average_precision(preds, trues, empty_clip_score=0.5)
    assert up.ap[3] == pytest.approx(0.75) and up.num_clips == 2 and up.num_skipped == 0
    # nothing to average: NaN, not a crash
    assert math.isnan(average_precision([[1]], [[]]).ap[2])
    with pytest.raises(ValueError, match="clips"):
        average_precision([[1]], [[1], [2]])


def test_from_curves_uses_peaks():
    t = np.arange(48)
    true = np.exp(-0.5 * ((t - 10) / 1.5) ** 2) + np.exp(-0.5 * ((t - 30) / 1.5) ** 2)
    assert curve_peaks(true, prominence=0.1).tolist() == [10, 30]
    pred_close = np.roll(true, 2)  # every peak 2 frames late
    res = average_precision_from_curves([pred_close], [true])
    assert res.ap == {2: 1.0, 3: 1.0, 5: 1.0}
    pred_far = np.roll(true, 4)
    assert average_precision_from_curves([pred_far], [true]).ap == {2: 0.0, 3: 0.0, 5: 1.0}
    # a flat ground truth has no keypoint -> skipped
    assert average_precision_from_curves([pred_far], [np.ones(48)]).num_skipped == 1


def test_onset_scores_by_hand():
    # 24 fps: 0.5 s -> frame 12, 1.0 s -> frame 24, 1.5 s -> frame 36
    res = onset_scores([[13, 24, 5]], [[0.5, 1.0, 1.5]], fps=24, tolerance=2)
    assert res.num_pred == 3 and res.num_true == 3
    assert res.precision == pytest.approx(2 / 3)  # 5 is far from every onset
    assert res.recall == pytest.approx(2 / 3)  # 36 has no prediction near it
    assert res.mean_offset_frames == pytest.approx(0.5)  # +1 (late) and 0
    assert res.mean_abs_offset_frames == pytest.approx(0.5)
    pooled = onset_scores([[11], []], [[0.5], [1.0]], fps=24, tolerance=2)
    assert pooled.recall == 0.5 and pooled.precision == 1.0 and pooled.mean_offset_frames == -1.0
    empty = onset_scores([[]], [[]])
    assert math.isnan(empty.precision) and math.isnan(empty.recall) and math.isnan(empty.mean_offset_frames)
