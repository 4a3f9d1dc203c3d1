import numpy as np
import pytest

from data_prep.probe_scenes import ProbeSpec, make_scene
from data_prep.synthetic import ClipSpec, make_clip
from keyvid.eval.sync import SyncDetector, event_peaks, impact_peaks, score_videos, sync_scores
from keyvid.eval.sync_check import VARIANTS, Clip, check_family, ordered, variant

SPEC = ClipSpec(64, 96, 24.0, 2.0, 16000)


@pytest.fixture(scope="module")
def impact_clips():
    # indices 0, 1 (bouncing ball, hammering), 3, 4, 6, 7: every clip with impacts among the first 8
    clips = [make_clip(i, 0, SPEC) for i in (0, 1, 3, 4, 6, 7)]
    return [c[0] for c in clips], [c[2].impact_times for c in clips]


def test_matching_counts_and_offsets():
    per_clip, pooled = sync_scores([[10, 30], [5]], [[10 / 24, 31 / 24, 40 / 24], []], fps=24.0, tolerance_s=2 / 24)
    assert per_clip[0].precision == 1.0 and per_clip[0].recall == pytest.approx(2 / 3)
    assert per_clip[0].mean_offset_frames == pytest.approx(-0.5)  # 10-10 and 30-31
    assert per_clip[0].f1 == pytest.approx(0.8)
    assert np.isnan(per_clip[1].recall) and per_clip[1].precision == 0.0  # calm clip with a spurious peak
    assert pooled.num_peaks == 3 and pooled.num_impacts == 3 and pooled.num_clips == 2
    assert pooled.precision == pytest.approx(2 / 3) and pooled.recall == pytest.approx(2 / 3)


def test_matching_is_in_time_not_frames():
    # 0.1 s tolerance: frame 3 at 30 fps is 0.1 s, frame 3 at 15 fps is 0.2 s from an impact at 0
    _, at30 = sync_scores([[3]], [[0.0]], fps=30.0, tolerance_s=0.1)
    _, at15 = sync_scores([[3]], [[0.0]], fps=15.0, tolerance_s=0.1)
    assert at30.f1 == 1.0 and at15.f1 == 0.0
    assert at30.mean_offset_frames == pytest.approx(2.4)  # reported in 24 fps frames


def test_frozen_and_flat_curves_have_no_peak():
    assert impact_peaks(np.zeros(48)).size == 0
    assert impact_peaks(np.full(48, 3.0)).size == 0
    assert event_peaks(np.zeros(48), 24.0).size == 0 and event_peaks(np.full(48, 3.0), 24.0).size == 0
    bump = np.zeros(48)
    bump[20] = 0.5
    assert event_peaks(bump, 24.0).tolist() == [20] and event_peaks(bump, 24.0, floor=1.0).size == 0


@pytest.mark.parametrize("detector", ["robust", "trajectory", "legacy"])
def test_true_video_scores_high_shifted_lower_static_lowest(impact_clips, detector):
    videos, times = impact_clips
    det = SyncDetector(detector)
    _, true, curves = score_videos(videos, times, fps=24.0, detector=det)
    assert true.f1 >= 0.85 and true.mean_abs_offset_frames <= 1.0
    assert all(len(c) == 48 for c in curves)
    shift = 6  # 0.25 s late: the motion lags the sound by 2.5x the tolerance
    late = [np.concatenate([v[:1].repeat(shift, 0), v[:-shift]]) for v in videos]
    _, shifted, _ = score_videos(late, times, fps=24.0, detector=det)
    assert shifted.f1 < 0.5 * true.f1
    static = [v[:1].repeat(len(v), 0) for v in videos]
    _, still, _ = score_videos(static, times, fps=24.0, detector=det)
    assert still.num_peaks == 0 and still.recall == 0.0 and still.f1 == 0.0


@pytest.mark.parametrize("detector", ["robust", "legacy"])
def test_calm_video_has_no_peaks_and_misses_impacts(impact_clips, detector):
    _, times = impact_clips
    calm = make_clip(2, 0, SPEC)  # index 2 is calm
    assert calm[2].label == "calm"
    per_clip, pooled, _ = score_videos([calm[0]], [times[0]], fps=24.0, detector=SyncDetector(detector))
    assert pooled.recall == 0.0 and pooled.num_peaks == 0


def test_trajectory_detector_follows_the_object_through_blur_and_shimmer(impact_clips):
    """What the trajectory diagnostic is for: a generated video whose object lands on every impact but
    is blurred, with the whole frame shimmering independently per frame, still scores as in sync."""
    from scipy.ndimage import uniform_filter

    videos, times = impact_clips
    rng = np.random.default_rng(0)
    soft = [np.clip(uniform_filter(v.astype(np.float32), size=(1, 3, 3, 1)) + rng.normal(0, 3, v.shape), 0, 255)
            .astype(np.uint8) for v in videos]
    _, true, _ = score_videos(soft, times, fps=24.0, detector=SyncDetector("trajectory"))
    assert true.f1 >= 0.85, true
    late = [np.concatenate([v[:1].repeat(6, 0), v[:-6]]) for v in soft]
    assert score_videos(late, times, fps=24.0, detector=SyncDetector("trajectory"))[1].f1 < 0.5 * true.f1


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="unknown sync detector 'magic'"):
        SyncDetector("magic")


def test_variants_move_the_truth_with_the_sound():
    clip = Clip(np.zeros((30, 8, 8, 3), np.uint8), 15.0, np.arange(32000, dtype=np.float32), 16000, [0.2, 1.0, 1.9])
    late, early = variant(clip, "audio_late"), variant(clip, "audio_early")
    assert late.impacts == pytest.approx([0.2 + 1 / 3, 1 + 1 / 3]) and early.impacts == pytest.approx([1 - 1 / 3, 1.9 - 1 / 3])
    assert late.wave[:5333].max() == 0 and early.wave[0] == pytest.approx(5333)
    video = variant(clip, "video_late")
    assert video.impacts == clip.impacts and len(video.frames) == 30
    with pytest.raises(ValueError, match="unknown variant"):
        variant(clip, "sideways")


def test_metrics_order_variants_on_the_probe_renderer():
    # a renderer the detector was not tuned on: camera pan, other shapes, 20 fps, 22.05 kHz audio
    spec = ProbeSpec(height=96, width=128, fps=20.0, pan=20.0)
    clips = []
    for i in range(6):
        frames, wave, truth = make_scene(i, 3, spec)
        clips.append(Clip(frames, spec.fps, wave[0], spec.sample_rate, truth["impact_times"]))
    res = check_family(clips)
    assert set(res) == set(VARIANTS)
    assert ordered(res, "Sync-F1"), {k: r["Sync-F1"][0] for k, r in res.items()}
    assert res["in_sync"]["Sync-F1"][0] >= 0.55 and res["frozen"]["Sync-F1"][0] == 0.0
    for metric in ("AV-Align", "AV-Align (events)"):
        assert ordered(res, metric), {k: r[metric][0] for k, r in res.items()}
    assert res["in_sync"]["AV-Align (events)"][0] >= 0.4  # 0.53 here, the shifted variants <= 0.07
