import numpy as np
import pytest

from data_prep.probe_scenes import ProbeSpec, make_scene
from keyvid.eval.av_align import audio_peaks, av_align, iou, pick_onsets, video_peaks


def test_iou_is_one_to_one_within_one_frame():
    fps = 10.0
    assert iou([0.5, 1.0], [0.52, 1.05], fps) == 1.0
    assert iou([0.5], [0.62], fps) == 0.0  # 0.12 s > 1 / fps
    # two onsets beside one video peak: one pair, |A u V| = 2 + 1 - 1 (the first release gave 2.0)
    assert iou([0.50, 0.55], [0.52], fps) == pytest.approx(0.5)
    assert np.isnan(iou([], [], fps)) and iou([0.5], [], fps) == 0.0


def test_pick_onsets_finds_isolated_bursts():
    env = np.zeros(100)
    env[[20, 50, 51, 80]] = [1.0, 0.8, 0.3, 0.6]
    assert pick_onsets(env).tolist() == [20, 50, 80]
    assert pick_onsets(np.ones(50)).size == 0


def test_audio_and_video_peaks_land_on_the_events():
    spec = ProbeSpec(height=96, width=128, fps=24.0, pan=0.0)
    frames, wave, truth = make_scene(1, 0, spec)
    onsets = audio_peaks(wave, spec.sample_rate)
    impacts = np.asarray(truth["impact_times"])
    # every event's sound is found within 40 ms (spectral flux comes about one 23 ms hop late)
    assert np.abs(onsets[:, None] - impacts[None]).min(axis=0).max() < 0.04, (onsets, impacts)
    # mean-flow maxima flank a bounce (the frame pair across it moves little): within 2 frames
    peaks = video_peaks(frames, spec.fps)
    assert np.abs(peaks[:, None] - impacts[None]).min(axis=0).max() <= 2 / spec.fps, (peaks, impacts)
    assert video_peaks(frames[:1].repeat(48, 0), spec.fps).size == 0  # frozen


def test_mean_over_clips_leaves_undefined_out():
    res = av_align([0.5, float("nan"), 0.3])
    assert res.score == pytest.approx(0.4) and res.num_clips == 2 and res.num_undefined == 1
    assert res.ci95[0] <= 0.4 <= res.ci95[1]
