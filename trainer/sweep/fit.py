"""Scaling laws fitted to a sweep's losses: L(N) = E + A·N^-α, and L(N, D) = E + A/N^α + B/D^β (Chinchilla).

numpy only (no scipy): a grid over the exponents with linear least squares for the rest, then Levenberg-Marquardt
on every parameter; standard errors from the fit's covariance, s²·(JᵀJ)⁻¹, which needs more points than parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

EXPONENTS = np.geomspace(0.01, 3.0, 400)  # the grid the exponent search starts from (one variable)
EXPONENTS_2D = np.geomspace(0.02, 2.0, 80)  # and per exponent for two variables


class FitError(ValueError):
    """The points cannot give a fit (too few, or losses that do not fall); the message says why in one line."""


@dataclass
class Fit:
    """A fitted law: its parameters, their standard errors (None without spare points), and how well it fits."""

    form: str  # "E + A*N^-alpha" or "E + A/N^alpha + B/D^beta"
    values: dict[str, float]  # E, A, alpha (and B, beta)
    errors: dict[str, float] | None  # one standard error each, from the covariance; None when points == parameters
    points: int  # points fitted
    rmse: float  # root-mean-square residual, in loss units
    notes: list[str] = field(default_factory=list)  # what the reader should know (no uncertainty, ...)

    def predict(self, n: float, d: float | None = None) -> float:
        """The law's loss at n parameters (and d tokens for the two-variable form)."""
        v = self.values
        loss = v["E"] + v["A"] * n ** -v["alpha"]
        return loss + v["B"] * d ** -v["beta"] if "B" in v and d is not None else loss

    def to_dict(self) -> dict:
        """For fit.json and --json."""
        return {"form": self.form, "values": self.values, "errors": self.errors, "points": self.points,
                "rmse": self.rmse, "notes": self.notes}  # fmt: skip


def fit_power_law(n: list[float], loss: list[float]) -> Fit:
    """L(N) = E + A·N^-α through (parameters, loss) points; FitError (one line) when they cannot give one."""
    x, y = _checked(n, "sizes"), np.asarray(loss, dtype=float)
    if len(set(x.tolist())) < 3:
        raise FitError(f"a fit of E, A and alpha needs at least 3 different sizes (got {len(set(x.tolist()))})")
    if np.polyfit(np.log(x), np.log(y), 1)[0] >= 0:
        raise FitError("the losses do not fall as the models grow: no power law to fit (train longer, or check the runs)")
    scale = float(np.exp(np.log(x).mean()))  # fit in N / scale, so the numbers stay near 1
    u = x / scale

    def model(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, a, alpha = p
        t = u ** -alpha
        return e + a * t, np.stack([np.ones_like(u), t, -a * t * np.log(u)], axis=1)

    p, cov, rmse = _refine(model, _grid([u], y, [EXPONENTS]), y)
    e, a, alpha = p
    values = {"E": e, "A": a * scale**alpha, "alpha": alpha}
    errors = None
    if cov is not None:  # A = a·scale^α: its error through both a and α (the delta method)
        grad = np.array([0.0, scale**alpha, a * scale**alpha * math.log(scale)])
        errors = {"E": _sd(cov[0, 0]), "A": _sd(grad @ cov @ grad), "alpha": _sd(cov[2, 2])}
    return _result("E + A*N^-alpha", values, errors, len(y), rmse, alpha <= 0 or a <= 0)


def fit_two_variable(n: list[float], d: list[float], loss: list[float]) -> Fit:
    """L(N, D) = E + A/N^α + B/D^β through (parameters, tokens, loss) points (Hoffmann et al. 2022)."""
    x, z, y = _checked(n, "sizes"), _checked(d, "token budgets"), np.asarray(loss, dtype=float)
    sizes, budgets = len(set(x.tolist())), len(set(z.tolist()))
    if sizes < 3 or budgets < 3 or len(y) < 5:  # E + B/D^beta over 2 budgets is 3 unknowns for 2 values
        raise FitError(
            f"a fit of L(N, D) needs at least 3 sizes and 3 token budgets "
            f"(got {len(y)} points, {sizes} sizes, {budgets} budgets)"
        )
    sx, sz = float(np.exp(np.log(x).mean())), float(np.exp(np.log(z).mean()))
    u, w = x / sx, z / sz

    def model(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, a, alpha, b, beta = p
        tn, td = u**-alpha, w**-beta
        jac = np.stack([np.ones_like(u), tn, -a * tn * np.log(u), td, -b * td * np.log(w)], axis=1)
        return e + a * tn + b * td, jac

    e, a, b, alpha, beta = _grid([u, w], y, [EXPONENTS_2D, EXPONENTS_2D])
    p, cov, rmse = _refine(model, np.array([e, a, alpha, b, beta]), y)
    e, a, alpha, b, beta = p
    values = {"E": e, "A": a * sx**alpha, "alpha": alpha, "B": b * sz**beta, "beta": beta}
    errors = None
    if cov is not None:
        ga = np.array([0, sx**alpha, a * sx**alpha * math.log(sx), 0, 0])
        gb = np.array([0, 0, 0, sz**beta, b * sz**beta * math.log(sz)])
        errors = {"E": _sd(cov[0, 0]), "A": _sd(ga @ cov @ ga), "alpha": _sd(cov[2, 2]),
                  "B": _sd(gb @ cov @ gb), "beta": _sd(cov[4, 4])}  # fmt: skip
    return _result("E + A/N^alpha + B/D^beta", values, errors, len(y), rmse, min(a, b, alpha, beta) <= 0)


def _checked(values: list[float], what: str) -> np.ndarray:
    """Positive finite values as an array; FitError otherwise."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise FitError("no finished points to fit")
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise FitError(f"the {what} must be positive numbers")
    return array


def _grid(inputs: list[np.ndarray], y: np.ndarray, grids: list[np.ndarray]) -> np.ndarray:
    """The best (E, coefficients..., exponents...) over a grid of exponents, each solved by linear least squares
    with E >= 0 (an irreducible loss below zero means nothing): one variable returns (E, a, alpha), two return
    (E, a, b, alpha, beta)."""
    mesh = np.stack([g.ravel() for g in np.meshgrid(*grids, indexing="ij")], axis=1)  # (G, k)
    cols = [np.ones((len(mesh), len(y)))] + [v[None, :] ** -mesh[:, i : i + 1] for i, v in enumerate(inputs)]
    design = np.stack(cols, axis=2)  # (G, n, 1 + k)
    coef = _solve(design, y)
    negative = coef[:, 0] < 0  # refit those with E = 0
    coef[negative] = 0.0
    coef[negative, 1:] = _solve(design[negative][:, :, 1:], y)
    rss = (((design @ coef[..., None])[..., 0] - y) ** 2).sum(1)
    best = int(np.argmin(np.where(np.isfinite(rss), rss, np.inf)))
    if len(inputs) == 1:
        return np.array([coef[best, 0], coef[best, 1], mesh[best, 0]])
    return np.concatenate([coef[best], mesh[best]])


def _solve(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares coefficients for a batch of design matrices (G, n, k); nan where one is singular."""
    gram = design.transpose(0, 2, 1) @ design
    coef = np.full(design.shape[::2], np.nan)
    ok = np.linalg.cond(gram) < 1e12 if len(gram) else np.zeros(0, bool)
    coef[ok] = np.linalg.solve(gram[ok], design[ok].transpose(0, 2, 1) @ y[:, None])[..., 0]
    return coef


def _refine(
    model: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], p: np.ndarray, y: np.ndarray, iters: int = 200
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Levenberg-Marquardt from p, keeping E >= 0: (parameters, their covariance or None when no points are spare,
    rmse). E held at its bound 0 gets no variance: the others' covariance is then that of the fit without E."""
    damping = 1e-3
    pred, jac = model(p)
    cost = float(((pred - y) ** 2).sum())
    for _ in range(iters):
        gram = jac.T @ jac
        step = np.linalg.lstsq(gram + damping * np.diag(np.diag(gram) + 1e-12), jac.T @ (y - pred), rcond=None)[0]
        trial = p + step
        trial[0] = max(trial[0], 0.0)
        new_pred, new_jac = model(trial)
        new_cost = float(((new_pred - y) ** 2).sum())
        if np.isfinite(new_cost) and new_cost < cost:
            done = cost - new_cost < 1e-15 * max(cost, 1e-30)
            p, pred, jac, cost, damping = trial, new_pred, new_jac, new_cost, damping / 3
            if done:
                break
        else:
            damping *= 4
            if damping > 1e12:
                break
    free = slice(0 if p[0] > 0 else 1, None)  # E held at its bound 0 is no longer a free parameter
    spare = len(y) - len(p[free])
    cov = None
    if spare > 0:
        cov = np.zeros((len(p), len(p)))
        cov[free, free] = np.linalg.pinv(jac[:, free].T @ jac[:, free]) * cost / spare
    return p, cov, math.sqrt(cost / len(y))


def _sd(variance: float) -> float:
    return math.sqrt(max(float(variance), 0.0))


def _result(form: str, values: dict, errors: dict | None, points: int, rmse: float, bad: bool) -> Fit:
    """The Fit, or FitError when the best fit is no falling power law."""
    if bad:
        raise FitError("the best fit is not a falling power law (a coefficient or exponent <= 0): the losses are too "
                       "noisy or too few for this form")  # fmt: skip
    notes = []
    if values["E"] <= 0:
        notes.append("E held at 0: the points do not pin down an irreducible loss")
    if errors is None:
        free = len(values) - (values["E"] <= 0)
        notes.append(f"no uncertainty: {points} points for {free} free parameters (add points)")
    return Fit(form, {k: float(v) for k, v in values.items()}, errors, points, rmse, notes)
