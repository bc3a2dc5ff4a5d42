"""RewardStandardizer: auxiliary rewards standardized with the training set's statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from upo.rewards import RewardStandardizer

RAW = np.array([[1.0, 0.0], [1.0, 10.0], [4.0, 20.0]])


def test_standardizer_hand_worked():
    """raw = [[1, 0], [1, 10], [4, 20]], weights [1.0, 0.5], population std (ddof=0).

    column 0: mean 2, deviations (-1, -1, 2), var (1 + 1 + 4) / 3 = 2, std sqrt(2)
              z0 = (-1/sqrt(2), -1/sqrt(2), 2/sqrt(2)) = (-0.7071, -0.7071, 1.4142)
    column 1: mean 10, deviations (-10, 0, 10), var 200/3, std 10 * sqrt(2/3) = 8.1650
              z1 = (-sqrt(3/2), 0, sqrt(3/2)) = (-1.2247, 0, 1.2247)
    r_a = 1.0 * z0 + 0.5 * z1 = (-1.3195, -0.7071, 2.0266)
    """
    s = RewardStandardizer.fit(RAW, ["readability", "length"], [1.0, 0.5])
    assert s.means == pytest.approx([2.0, 10.0])
    assert s.stds == pytest.approx([math.sqrt(2), 10 * math.sqrt(2 / 3)])
    a, b = 1 / math.sqrt(2), math.sqrt(3 / 2)
    np.testing.assert_allclose(s.transform(RAW), [[-a, -b], [-a, 0.0], [2 * a, b]])
    np.testing.assert_allclose(s.combine(RAW), [-a - 0.5 * b, -a, 2 * a + 0.5 * b])
    np.testing.assert_allclose(s.combine(RAW), [-1.3195, -0.7071, 2.0266], atol=1e-4)


def test_standardizer_uses_training_statistics_on_new_data():
    s = RewardStandardizer.fit(RAW, ["a", "b"], [1.0, 1.0])
    new = np.array([[2.0, 10.0 + 10 * math.sqrt(2 / 3)]])  # the training mean / one training std up
    np.testing.assert_allclose(s.transform(new), [[0.0, 1.0]])


def test_standardizer_constant_reward_guard():
    raw = np.array([[5.0, 1.0], [5.0, 2.0], [5.0, 3.0]])
    s = RewardStandardizer.fit(raw, ["constant", "x"], [1.0, 0.0])
    assert s.stds[0] == 1.0
    np.testing.assert_array_equal(s.transform(raw)[:, 0], [0.0, 0.0, 0.0])  # no signal, no blow-up
    np.testing.assert_array_equal(s.transform(np.array([[6.0, 2.0]]))[:, 0], [1.0])
    np.testing.assert_array_equal(s.combine(raw), [0.0, 0.0, 0.0])  # x has weight 0


def test_standardizer_weights():
    def combined(weights, standardize=True):
        return RewardStandardizer.fit(RAW, ["a", "b"], weights, standardize).combine(RAW)

    z = RewardStandardizer.fit(RAW, ["a", "b"], [1.0, 1.0]).transform(RAW)
    np.testing.assert_allclose(combined([1.0, 0.0]), z[:, 0])
    np.testing.assert_allclose(combined([0.0, -2.0]), -2 * z[:, 1])  # a negative weight flips a reward
    np.testing.assert_allclose(combined([0.95, 0.05]), 0.95 * z[:, 0] + 0.05 * z[:, 1])
    raw_sum = RewardStandardizer.fit(RAW, ["a", "b"], [0.95, 0.05], standardize=False)
    np.testing.assert_allclose(raw_sum.transform(RAW), RAW)
    np.testing.assert_allclose(raw_sum.combine(RAW), [0.95, 1.45, 4.8])


def test_standardizer_round_trips_through_json():
    s = RewardStandardizer.fit(RAW, ["readability", "length"], [1.0, 0.5])
    restored = RewardStandardizer.from_dict(json.loads(json.dumps(s.to_dict())))
    assert restored == s
    np.testing.assert_array_equal(restored.combine(RAW), s.combine(RAW))
    with pytest.raises(ValueError, match="expected keys"):
        RewardStandardizer.from_dict({**s.to_dict(), "extra": 1})


def test_standardizer_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected raw scores"):
        RewardStandardizer.fit(RAW, ["a"], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        RewardStandardizer.fit(np.array([[math.nan]]), ["a"], [1.0])
    s = RewardStandardizer.fit(RAW, ["a", "b"], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"expected raw scores \[n, 2\]"):
        s.transform(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="must match"):
        RewardStandardizer(names=["a"], weights=[1.0, 2.0], means=[0.0], stds=[1.0])
