"""Fitting the BG/NBD churn model and the Gamma-Gamma spend model to a transaction history
by maximum likelihood (``tierstream fit``), and writing the result into a policy.

RFM summaries come from the core itself: the purchases up to the end of the calibration
period are replayed (:func:`app.domain.replay.replay`, deduplicated by event id) and each
customer's :func:`app.domain.features.rfm_summary` is taken as of that day, so the model
is fitted on exactly the ``frequency``, ``recency``, ``T`` and ``monetary_value`` the
engine computes live (``lifetimes`` conventions: purchases grouped per UTC day, refunds
left out, ``monetary_value`` the mean spend of the repeat days).

Units. ``recency`` and ``T`` are whole days; in weeks they are divided by 7 (fractional
weeks) while ``frequency`` stays the number of repeat purchase *days*. This is what Fader,
Hardie and Lee (2005) did with CDNOW (their summary has ``T = 38.86`` weeks = 272 days / 7)
and what reproduces their estimates: on ``lifetimes``' ``CDNOW_sample.txt`` calibrated until
1997-09-30 it gives r = 0.2426, alpha = 4.414, a = 0.7929, b = 2.426 (the paper: 0.243,
4.414, 0.793, 2.426). ``lifetimes``' own ``freq='W'`` instead groups purchases into calendar
weeks and counts whole weeks; on the same data that gives r = 0.291, alpha = 6.85, a = 0.665,
b = 2.32 - not the paper's model. As days/7 is a pure change of time scale, ``weeks`` and
``days`` give the same r, a and b, and alpha in days is 7 times alpha in weeks.

The likelihoods are the ones of :mod:`app.domain.bgnbd`, vectorised with numpy and
maximised with ``scipy.optimize.minimize`` (BFGS with the analytic gradient, over the
logarithms of the parameters, times scaled so that the oldest customer's age is 10 as
``lifetimes`` does; Nelder-Mead if BFGS stops short).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import betaln, digamma, gammaln

from app.adapters.policy_files import load_policy, parse_policy
from app.domain.bgnbd import UNIT_DAYS, BgNbd, GammaGamma, Model, Unit, model_to_yaml
from app.domain.errors import PolicyError, TierstreamError
from app.domain.events import Event
from app.domain.features import rfm_summary
from app.domain.replay import replay, sort_key
from app.domain.state import DAY_MS, day_of

Array = npt.NDArray[np.float64]


class FitError(TierstreamError):
    """The model cannot be fitted to the data (no purchases, no repeat customers, the
    optimiser did not converge); the message says which."""


@dataclass(frozen=True, slots=True)
class Summaries:
    """Per-customer RFM in the model's unit, customers sorted by id."""

    customer_ids: list[str]
    frequency: Array
    recency: Array
    T: Array
    monetary_value: Array
    unit: Unit
    until: int  # epoch ms, start of the last day of the calibration period
    purchases: int  # purchase events used (refunds included, after de-duplication)
    later: int  # purchase events after the calibration period, left out


def summarize(events: Iterable[Event], until: int | None = None, unit: Unit = "weeks") -> Summaries:
    """RFM summaries as of the UTC day of ``until`` (default: the day of the latest
    purchase), from the purchases on or before that day, through the core."""
    purchases = [e for e in events if e.kind == "purchase"]
    if not purchases:
        raise FitError("no purchase events: nothing to fit")
    last_day = max(day_of(e.occurred_at) for e in purchases)
    end_day = day_of(until) if until is not None else last_day
    kept = [e for e in purchases if day_of(e.occurred_at) <= end_day]
    if not kept:
        raise FitError("no purchase on or before the end of the calibration period")
    result = replay(sorted(kept, key=sort_key), load_policy())
    as_of = end_day * DAY_MS
    ids, rows = [], []
    for cid in sorted(result.states):
        state = result.states[cid]
        if state.first_purchase_at is None:  # only refunds
            continue
        s = rfm_summary(state, as_of)
        ids.append(cid)
        rows.append((s.frequency, s.recency, s.T, s.monetary_value))
    if not ids:
        raise FitError("no customer with a purchase (only refunds) in the calibration period")
    table = np.array(rows, dtype=np.float64)
    per_unit = float(UNIT_DAYS[unit])
    return Summaries(
        customer_ids=ids,
        frequency=table[:, 0],
        recency=table[:, 1] / per_unit,
        T=table[:, 2] / per_unit,
        monetary_value=table[:, 3],
        unit=unit,
        until=as_of,
        purchases=result.events - result.duplicates,
        later=len(purchases) - len(kept),
    )


# --- BG/NBD -------------------------------------------------------------------------------


def bgnbd_log_likelihood(model: BgNbd, x: Array, t_x: Array, T: Array) -> Array:
    """Per-customer log-likelihood (eq. (6) of the paper; :meth:`BgNbd.log_likelihood`)."""
    return _bgnbd_ll_grad(np.array([model.r, model.alpha, model.a, model.b]), x, t_x, T)[0]


def _bgnbd_ll_grad(
    params: Array, x: Array, t_x: Array, T: Array, grad: bool = False
) -> tuple[Array, Array | None]:
    """Log-likelihoods and (optionally) their gradients with respect to (r, alpha, a, b),
    one row per customer."""
    r, alpha, a, b = params
    repeat = x > 0
    xr = np.maximum(x, 1.0)  # keeps b + x - 1 > 0 where x == 0 (masked out below)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    alive = -(r + x) * np.log(alpha + T)
    dead = np.where(
        repeat, np.log(a) - np.log(b + xr - 1.0) - (r + x) * np.log(alpha + t_x), -np.inf
    )
    total = np.logaddexp(alive, dead)
    ll = common + total
    if not grad:
        return ll, None
    w_alive = np.exp(alive - total)
    w_dead = np.exp(dead - total)  # 0 without repeats
    d_r = digamma(r + x) - digamma(r) + np.log(alpha)
    d_r -= w_alive * np.log(alpha + T) + w_dead * np.log(alpha + t_x)
    d_alpha = r / alpha - (r + x) * (w_alive / (alpha + T) + w_dead / (alpha + t_x))
    d_a = digamma(a + b) - digamma(a + b + x) + w_dead / a
    d_b = digamma(b + x) - digamma(a + b + x) - digamma(b) + digamma(a + b)
    d_b -= w_dead / (b + xr - 1.0)
    return ll, np.stack([d_r, d_alpha, d_a, d_b], axis=1)


def fit_bgnbd(x: Array, t_x: Array, T: Array) -> tuple[BgNbd, float]:
    """Maximum-likelihood (r, alpha, a, b) and the maximised log-likelihood (eq. (7))."""
    if x.size == 0:
        raise FitError("no customers to fit")
    if not np.any(x > 0):
        raise FitError(
            f"no repeat customers among {x.size:,}: the drop-out process (a, b) cannot be "
            "estimated; a longer calibration period (--until) may help"
        )
    if float(T.max()) <= 0:
        raise FitError("every customer's first purchase is on the last day: no time observed")
    scale = 10.0 / float(T.max())
    xs, ts, Ts = x, t_x * scale, T * scale

    def objective(log_params: Array) -> tuple[float, Array]:
        params = np.exp(log_params)
        ll, g = _bgnbd_ll_grad(params, xs, ts, Ts, grad=True)
        assert g is not None
        return -float(ll.mean()), -(g.mean(axis=0) * params)

    log_params = _minimize(objective, np.zeros(4), "BG/NBD")
    r, alpha_scaled, a, b = np.exp(log_params)
    model = BgNbd(float(r), float(alpha_scaled / scale), float(a), float(b))
    ll = float(bgnbd_log_likelihood(model, x, t_x, T).sum())
    return model, ll


# --- Gamma-Gamma --------------------------------------------------------------------------


def gamma_gamma_log_likelihood(model: GammaGamma, x: Array, m: Array) -> Array:
    """Per-customer log density of the mean spend (:meth:`GammaGamma.log_likelihood`)."""
    return _gg_ll_grad(np.array([model.p, model.q, model.v]), x, m)[0]


def _gg_ll_grad(
    params: Array, x: Array, m: Array, grad: bool = False
) -> tuple[Array, Array | None]:
    p, q, v = params
    px = p * x
    log_vxm = np.log(v + x * m)
    ll = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * log_vxm
    )
    if not grad:
        return ll, None
    d_p = x * (digamma(px + q) - digamma(px) + np.log(m) + np.log(x) - log_vxm)
    d_q = digamma(px + q) - digamma(q) + np.log(v) - log_vxm
    d_v = q / v - (px + q) / (v + x * m)
    return ll, np.stack([d_p, d_q, d_v], axis=1)


def fit_gamma_gamma(x: Array, m: Array) -> tuple[GammaGamma, float]:
    """Maximum-likelihood (p, q, v) from repeat customers' frequency and mean spend (all
    ``x > 0`` and ``m > 0``), and the maximised log-likelihood."""
    if x.size == 0:
        raise FitError("no repeat customer with a positive spend: Gamma-Gamma cannot be fitted")
    scale = 1.0 / float(m.mean())  # spend scaled to mean 1: v is in spend units
    ms = m * scale

    def objective(log_params: Array) -> tuple[float, Array]:
        params = np.exp(log_params)
        ll, g = _gg_ll_grad(params, x, ms, grad=True)
        assert g is not None
        return -float(ll.mean()), -(g.mean(axis=0) * params)

    log_params = _minimize(objective, np.zeros(3), "Gamma-Gamma")
    p, q, v_scaled = np.exp(log_params)
    model = GammaGamma(float(p), float(q), float(v_scaled / scale))
    ll = float(gamma_gamma_log_likelihood(model, x, m).sum())
    return model, ll


def _minimize(objective: Callable[[Array], tuple[float, Array]], x0: Array, what: str) -> Array:
    """BFGS with the gradient; when it stops short (often 'precision loss' right at the
    optimum), Nelder-Mead from where it stopped, which needs no gradient."""
    with np.errstate(all="ignore"):
        res = minimize(objective, x0, jac=True, method="BFGS", options={"gtol": 1e-9})
        if not (res.success and np.all(np.isfinite(res.x))):
            res = minimize(
                lambda p: objective(p)[0],
                res.x if np.all(np.isfinite(res.x)) else x0,
                method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000},
            )
    if not (res.success and np.all(np.isfinite(res.x)) and np.isfinite(res.fun)):
        raise FitError(f"the {what} fit did not converge: {res.message}")
    if np.any(np.abs(res.x) > 30):  # a parameter ran off to 0 or infinity
        params = ", ".join(f"{v:.3g}" for v in np.exp(res.x))
        raise FitError(f"the {what} fit did not converge: parameters ran away ({params})")
    return np.asarray(res.x, dtype=np.float64)


# --- the whole fit ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FitResult:
    model: Model
    customers: int
    repeat_customers: int
    log_likelihood: float
    #: Repeat customers with a positive mean spend (the Gamma-Gamma sample).
    spend_customers: int
    spend_log_likelihood: float | None
    #: Correlation of frequency and mean spend among them (Gamma-Gamma assumes none).
    spend_correlation: float | None
    summaries: Summaries
    notes: list[str] = field(default_factory=list)


def fit_events(
    events: Iterable[Event],
    until: int | None = None,
    unit: Unit = "weeks",
    source: str | None = None,
) -> FitResult:
    """Fit both models to the purchases on or before the day of ``until``."""
    s = summarize(events, until, unit)
    bgnbd, ll = fit_bgnbd(s.frequency, s.recency, s.T)
    repeat = s.frequency > 0
    spenders = repeat & (s.monetary_value > 0)
    notes: list[str] = []
    gamma_gamma: GammaGamma | None = None
    spend_ll: float | None = None
    correlation: float | None = None
    x_m, m = s.frequency[spenders], s.monetary_value[spenders]
    if x_m.size >= 2:
        gamma_gamma, spend_ll = fit_gamma_gamma(x_m, m)
        if gamma_gamma.q <= 1.0:
            notes.append(
                f"Gamma-Gamma left out: q = {gamma_gamma.q:.3g} <= 1, the mean spend "
                "p*v/(q-1) would not be finite"
            )
            gamma_gamma, spend_ll = None, None
        if np.ptp(x_m) > 0 and np.ptp(m) > 0:
            correlation = float(np.corrcoef(x_m, m)[0, 1])
    else:
        notes.append("Gamma-Gamma left out: fewer than 2 repeat customers with a positive spend")
    if int(repeat.sum() - spenders.sum()):
        notes.append(
            f"{int(repeat.sum() - spenders.sum()):,} repeat customer(s) without a positive "
            "mean spend are not in the Gamma-Gamma fit"
        )
    if s.later:
        notes.append(f"{s.later:,} purchase(s) after the calibration period left out")
    fitted: dict[str, Any] = {}
    if source is not None:
        fitted["events"] = source
    fitted["until"] = _date(s.until)
    fitted["customers"] = len(s.customer_ids)
    fitted["repeat_customers"] = int(repeat.sum())
    fitted["log_likelihood"] = round(ll, 2)
    if spend_ll is not None:
        fitted["spend_log_likelihood"] = round(spend_ll, 2)
    return FitResult(
        model=Model(unit, bgnbd, gamma_gamma, fitted),
        customers=len(s.customer_ids),
        repeat_customers=int(repeat.sum()),
        log_likelihood=ll,
        spend_customers=int(spenders.sum()),
        spend_log_likelihood=spend_ll,
        spend_correlation=correlation,
        summaries=s,
        notes=notes,
    )


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date().isoformat()


# --- writing the model into a policy ------------------------------------------------------

_MODEL_LINE = re.compile(r"""^(model|"model"|'model')\s*:(\s|$)""")


def replace_model_block(text: str, block: str) -> str:
    """``text`` (a policy's YAML) with its top-level ``model:`` block replaced by
    ``block``, or ``block`` appended when there is none. The block runs from the
    ``model:`` line to the next line that starts in column 0 with anything but a comment
    (the next top-level key), or the end; column-0 comments and blank lines right before
    that next key stay (they belong to it). Every other line is kept as it is.

    >>> replace_model_block("a: 1\\nmodel: {x: 1}\\n# b's comment\\nb: 2\\n", "model: {}\\n")
    "a: 1\\nmodel: {}\\n# b's comment\\nb: 2\\n"
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _MODEL_LINE.match(line)), None)
    if start is None:
        if not text:
            return block
        return text + ("" if text.endswith("\n") else "\n") + "\n" + block
    end = start + 1
    while end < len(lines) and not _top_level(lines[end]):
        end += 1
    while end > start + 1 and _blank_or_top_comment(lines[end - 1]):
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def _top_level(line: str) -> bool:
    return bool(line.strip()) and not line[0].isspace() and not line.startswith("#")


def _blank_or_top_comment(line: str) -> bool:
    return not line.strip() or line.startswith("#")


def write_model(path: Path, model: Model, write: bool) -> str:
    """The policy file's text with ``model`` in it, checked with
    :func:`app.adapters.policy_files.parse_policy` (a :class:`PolicyError` when it would not load);
    written (atomically) only when ``write``. Returns the new text."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [("$", f"cannot read file: {exc.strerror or exc}")]) from None
    new = replace_model_block(text, model_to_yaml(model))
    parse_policy(new, str(path))
    if write and new != text:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(new)
            os.chmod(tmp, path.stat().st_mode & 0o777)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return new
