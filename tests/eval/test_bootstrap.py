import numpy as np

from keyvid.eval.bootstrap import interval, mean_interval, resample, statistic_interval


def test_mean_interval_covers_the_mean_and_narrows_with_more_clips():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.5, 0.1, 10), rng.normal(0.5, 0.1, 400)
    lo_s, hi_s = mean_interval(small)
    lo_l, hi_l = mean_interval(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3  # about sqrt(40) narrower
    assert np.isnan(mean_interval([0.3])).all()


def test_statistic_interval_resamples_whole_clips_and_drops_undefined_draws():
    counts = np.array([[1, 2], [0, 0], [3, 3]], float)  # (hits, total) per clip, pooled as a ratio
    ci = statistic_interval(counts, lambda c: c[:, 0].sum() / c[:, 1].sum(), draws=500)
    assert 0.0 <= ci[0] <= 0.8 <= ci[1] <= 1.0  # draws of only clip 2 give 0/0 and are dropped
    assert np.isnan(interval([np.nan, np.inf])).all()
    assert resample(5, draws=3, seed=0).shape == (3, 5)
    np.testing.assert_array_equal(resample(5, seed=7), resample(5, seed=7))
