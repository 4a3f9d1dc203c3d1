import json

import numpy as np
import pytest

from keyvid.data.keyframes import (
    detect_keypoints,
    keyframe_fs,
    select_keyframes,
    to_frame_grid,
    uniform_keyframes,
)
from tests.conftest import FIXTURES, needs_fixtures


def _vectors():
    d = json.loads((FIXTURES / "keyframe_selection_vectors.json").read_text())
    return d["cases"] + d["extra_fps30"]


@needs_fixtures
def test_detection_matches_upstream_vectors():
    for case in _vectors():
        kp = detect_keypoints(case["curve"], normalize="none")
        np.testing.assert_allclose(kp.smoothed, case["smoothed"], rtol=0, atol=1e-12, err_msg=case["name"])
        assert kp.peaks.tolist() == case["peaks"], case["name"]
        assert kp.valleys.tolist() == case["valleys"], case["name"]


@needs_fixtures
def test_upstream_mode_reproduces_seeded_selection():
    n = 0
    for case in _vectors():
        kp = detect_keypoints(case["curve"], normalize="none")
        fps = case["select_args"]["fps_ori"]
        for rec in case["select"]:
            idx = select_keyframes(kp, 12, rng=rec["seed"], mode="upstream")
            assert idx.tolist() == rec["frame_indices_for_selection"], (case["name"], rec["seed"])
            grid = to_frame_grid(idx, fps)
            assert grid.tolist() == rec["frame_indices"]
            per_frame, fs = keyframe_fs(grid, fps)
            assert per_frame.tolist() == rec["frame_strides_fps"]
            assert fs == rec["fps_clip"]
            n += 1
    assert n == 96


@needs_fixtures
def test_paper_fill_equals_upstream_where_upstream_is_deterministic():
    # With the anchors fixed, the proportional step of both modes is Algorithm 1 lines 6-12;
    # the paper mode also fills the tail, so compare only cases whose last anchor ends the clip.
    from keyvid.data.keyframes import _fill_upstream, largest_remainder

    for case in _vectors():
        for rec in case["select"]:
            if rec["allocated"] is None:
                continue
            anchors = np.array(rec["anchors"])
            alloc = largest_remainder(np.diff(anchors), rec["num_padding"])
            assert alloc.tolist() == rec["allocated"]
            assert _fill_upstream(anchors, 12).tolist() == rec["padded"]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("kind", ["spiky", "flat", "noise", "sine"])
def test_paper_selection_is_distinct_sorted_from_zero(seed, kind):
    rs = np.random.RandomState(seed)
    t = np.arange(48)
    curve = {
        "spiky": np.exp(-0.5 * ((t[:, None] - rs.randint(0, 48, 5)) / 1.5) ** 2).sum(1),
        "flat": np.full(48, 3.0),
        "noise": rs.rand(48),
        "sine": np.sin(t / rs.uniform(1, 4)) + 1,
    }[kind]
    kp = detect_keypoints(curve)
    for tk in (4, 12, 16, 48):
        idx = select_keyframes(kp, tk, rng=seed)
        assert len(idx) == tk and idx[0] == 0
        assert np.all(np.diff(idx) > 0) and idx[-1] < 48


def test_paper_selection_contains_chosen_peaks_and_is_seeded():
    curve = np.zeros(48)
    curve[[10, 22, 34]] = 1.0
    kp = detect_keypoints(curve)
    assert kp.peaks.tolist() == [10, 22, 34]
    a = select_keyframes(kp, 12, rng=3)
    b = select_keyframes(kp, 12, rng=3)
    assert a.tolist() == b.tolist()
    assert {10, 22, 34} <= set(a.tolist())  # fewer peaks than T_K/2-1: all are taken
    # a valley lies between consecutive peaks and is selected
    between = [v for v in kp.valleys if 10 < v < 22]
    assert between and any(v in a for v in between)


def test_peak_budget_is_half_minus_one():
    curve = np.zeros(48)
    curve[2::6] = 1.0  # 8 well separated peaks
    kp = detect_keypoints(curve)
    assert len(kp.peaks) >= 7
    counts = {len(set(select_keyframes(kp, 8, rng=s).tolist()) & set(kp.peaks.tolist())) for s in range(10)}
    # 8 keyframes -> at most 3 random peaks; the fill may land on other peaks only by chance
    assert min(counts) >= 3


def test_no_peaks_gives_uniform_spacing():
    kp = detect_keypoints(np.ones(48))
    assert len(kp.peaks) == 0
    assert select_keyframes(kp, 12, rng=0).tolist() == uniform_keyframes(48, 12).tolist()
    assert uniform_keyframes(48, 12).tolist() == list(range(0, 48, 4))


def test_window_reindexes():
    curve = np.zeros(96)
    curve[[20, 60, 80]] = 1
    kp = detect_keypoints(curve).window(48, 48)
    assert kp.peaks.tolist() == [12, 32] and kp.num_frames == 48


@pytest.mark.parametrize(
    "curve, msg",
    [([], "empty"), ([1.0, np.nan, 2, 3, 4, 5], "non-finite"), ([1, 2, 3], "fewer than the smoothing window"),
     (np.ones((4, 12)), "1-D")],
)
def test_bad_curves_raise(curve, msg):
    with pytest.raises(ValueError, match=msg):
        detect_keypoints(curve)


def test_bad_options_raise():
    kp = detect_keypoints(np.random.rand(48))
    with pytest.raises(ValueError, match="num_keyframes=60"):
        select_keyframes(kp, 60)
    with pytest.raises(ValueError, match="mode='bogus'"):
        select_keyframes(kp, 12, mode="bogus")
    with pytest.raises(ValueError, match="normalize='l2'"):
        detect_keypoints(np.random.rand(48), normalize="l2")
    with pytest.raises(ValueError, match="outside"):
        kp.window(40, 48)
