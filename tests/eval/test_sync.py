import numpy as np
import pytest

from data_prep.synthetic import ClipSpec, make_clip
from keyvid.eval.sync import impact_peaks, score_videos, sync_scores

SPEC = ClipSpec(64, 96, 24.0, 2.0, 16000)


@pytest.fixture(scope="module")
def impact_clips():
    # indices 0, 1 (bouncing ball, hammering), 3, 4, 6, 7: every clip with impacts among the first 8
    clips = [make_clip(i, 0, SPEC) for i in (0, 1, 3, 4, 6, 7)]
    return [c[0] for c in clips], [c[2].impact_times for c in clips]


def test_matching_counts_and_offsets():
    per_clip, pooled = sync_scores([[10, 30], [5]], [[10 / 24, 31 / 24, 40 / 24], []], fps=24.0, tolerance=2)
    assert per_clip[0].precision == 1.0 and per_clip[0].recall == pytest.approx(2 / 3)
    assert per_clip[0].mean_offset_frames == pytest.approx(-0.5)  # 10-10 and 30-31
    assert per_clip[0].f1 == pytest.approx(0.8)
    assert np.isnan(per_clip[1].recall) and per_clip[1].precision == 0.0  # calm clip with a spurious peak
    assert pooled.num_peaks == 3 and pooled.num_impacts == 3 and pooled.num_clips == 2
    assert pooled.precision == pytest.approx(2 / 3) and pooled.recall == pytest.approx(2 / 3)


def test_frozen_and_flat_curves_have_no_peak():
    assert impact_peaks(np.zeros(48)).size == 0
    assert impact_peaks(np.full(48, 3.0)).size == 0


def test_true_video_scores_high_shifted_lower_static_lowest(impact_clips):
    videos, times = impact_clips
    _, true, curves = score_videos(videos, times, fps=24.0)
    assert true.f1 >= 0.85 and true.mean_abs_offset_frames <= 1.0
    assert all(len(c) == 48 for c in curves)
    shift = 6  # 0.25 s late: the motion lags the sound by 3x the tolerance
    late = [np.concatenate([v[:1].repeat(shift, 0), v[:-shift]]) for v in videos]
    _, shifted, _ = score_videos(late, times, fps=24.0)
    assert shifted.f1 < 0.5 * true.f1
    static = [v[:1].repeat(len(v), 0) for v in videos]
    _, still, _ = score_videos(static, times, fps=24.0)
    assert still.num_peaks == 0 and still.recall == 0.0
    assert np.isnan(still.f1) or still.f1 < shifted.f1


def test_calm_video_has_no_peaks_and_misses_impacts(impact_clips):
    _, times = impact_clips
    calm = make_clip(2, 0, SPEC)  # index 2 is calm
    assert calm[2].label == "calm"
    per_clip, pooled, _ = score_videos([calm[0]], [times[0]], fps=24.0)
    assert pooled.recall == 0.0 and pooled.num_peaks == 0
