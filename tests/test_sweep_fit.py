"""`helium sweep`'s fits: known E, A, alpha (and B, beta) come back from noisy synthetic losses within the stated
standard errors; too few points or losses that do not fall give one clear error."""

from __future__ import annotations

import re

import numpy as np
import pytest

from trainer.sweep.fit import FitError, fit_power_law, fit_two_variable

SIGMAS = 4  # a value more than this many standard errors from the truth fails the test


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_power_law_comes_back_within_its_uncertainty(seed):
    rng = np.random.default_rng(seed)
    n = np.geomspace(2e4, 5e6, 9)
    truth = {"E": 1.6, "A": 40.0, "alpha": 0.3}
    loss = truth["E"] + truth["A"] * n ** -truth["alpha"] + rng.normal(0, 0.01, n.size)
    fit = fit_power_law(list(n), list(loss))
    assert fit.errors is not None and fit.points == 9 and fit.notes == []
    for key, value in truth.items():
        assert abs(fit.values[key] - value) <= SIGMAS * fit.errors[key], (key, fit)
    assert 0 < fit.errors["alpha"] < 0.2 and fit.rmse < 0.02
    assert fit.predict(1e6) == pytest.approx(truth["E"] + truth["A"] * 1e6**-0.3, abs=0.05)


def test_three_points_fit_exactly_and_say_they_carry_no_uncertainty():
    n = np.array([1e4, 1e5, 1e6])
    fit = fit_power_law(list(n), list(2.0 + 30 * n**-0.4))
    assert fit.values == pytest.approx({"E": 2.0, "A": 30.0, "alpha": 0.4}, rel=1e-3)
    assert fit.errors is None and "no uncertainty" in fit.notes[0]


def test_an_irreducible_loss_below_zero_is_held_at_zero():
    fit = fit_power_law([1e4, 1e5, 1e6], [3.0, 2.5, 2.0])  # straight in log N: only E -> -inf fits it exactly
    assert fit.values["E"] == 0 and "E held at 0" in fit.notes[0] and fit.values["alpha"] > 0
    assert fit.errors is not None and fit.errors["E"] == 0 and fit.errors["alpha"] > 0  # A and alpha: 1 spare point


@pytest.mark.parametrize("seed", [0, 1])
def test_the_two_variable_law_comes_back_within_its_uncertainty(seed):
    rng = np.random.default_rng(seed)
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(3e4, 3e6, 5), np.geomspace(2e5, 2e7, 4)))
    truth = {"E": 1.5, "A": 60.0, "alpha": 0.35, "B": 400.0, "beta": 0.3}
    loss = truth["E"] + truth["A"] * n ** -truth["alpha"] + truth["B"] * d ** -truth["beta"]
    fit = fit_two_variable(list(n), list(d), list(loss + rng.normal(0, 0.005, n.size)))
    assert fit.errors is not None and fit.points == 20
    for key, value in truth.items():
        assert abs(fit.values[key] - value) <= SIGMAS * fit.errors[key], (key, fit)


@pytest.mark.parametrize(
    ("n", "loss", "says"),
    [
        ([1e4, 1e5], [3.0, 2.5], "at least 3 different sizes (got 2)"),
        ([1e4, 1e4, 1e4], [3.0, 2.9, 2.8], "at least 3 different sizes (got 1)"),
        ([1e4, 1e5, 1e6], [3.0, 3.0, 3.1], "do not fall as the models grow"),
        ([1e4, 1e5, 1e6], [3.0, 3.2, 3.4], "do not fall as the models grow"),
        ([1e4, -1.0, 1e6], [3.0, 2.0, 1.0], "must be positive"),
    ],
)
def test_degenerate_points_give_one_clear_error(n, loss, says):
    with pytest.raises(FitError, match=re.escape(says)) as caught:
        fit_power_law(n, loss)
    assert "\n" not in str(caught.value)


def test_the_two_variable_law_needs_three_sizes_and_three_budgets():
    with pytest.raises(FitError, match=re.escape("3 sizes and 3 token budgets (got 6 points, 3 sizes, 2 budgets)")):
        fit_two_variable([1e4, 1e5, 1e6] * 2, [1e6] * 3 + [4e6] * 3, [3.0, 2.9, 2.8, 2.7, 2.6, 2.5])
