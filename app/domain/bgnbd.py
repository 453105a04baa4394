"""The BG/NBD churn model and the Gamma-Gamma spend model: pure math, no numpy.

BG/NBD (Fader, Hardie & Lee 2005, "'Counting Your Customers' the Easy Way: An Alternative
to the Pareto/NBD Model", Marketing Science 24(2), 275-284): while alive, a customer buys
at a Poisson rate ``lambda ~ Gamma(r, alpha)``; after each purchase they drop out with
probability ``p ~ Beta(a, b)``. A customer is summarised by the RFM triple of the
``lifetimes`` library, all in the model's time unit:

- ``x``: repeat purchases (``frequency``: purchase days after the first one),
- ``t_x``: time from the first to the last purchase (``recency``),
- ``T``: time from the first purchase to now (the customer's age).

Gamma-Gamma (Fader, Hardie & Lee 2005b, "RFM and CLV: Using Iso-Value Curves for Customer
Base Analysis", JMR 42(4); Fader & Hardie 2013, note 025 "The Gamma-Gamma Model of
Monetary Value"): a customer's spend per purchase day is Gamma(p, nu) around a personal
mean, with ``nu ~ Gamma(q, v)`` over customers.

Parameters live in a policy's top-level ``model:`` section, written by ``tierstream fit``
(:func:`parse_model`, :func:`model_to_yaml`)::

    model:                      # written by `tierstream fit`
      unit: weeks               # days | weeks
      bgnbd: {r: 0.243, alpha: 4.414, a: 0.793, b: 2.426}
      gamma_gamma: {p: 6.25, q: 3.74, v: 15.44}
      fitted: {events: CDNOW_sample.txt, until: "1997-09-30", customers: 2357}

The paper's CDNOW estimates; a customer with 2 repeat purchases, the last 30.43 weeks
after the first, 38.86 weeks ago, is alive with probability 0.73:

>>> m = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
>>> round(m.p_alive(x=2, t_x=30.43, T=38.86), 3)
0.727
>>> m.p_alive(x=0, t_x=0.0, T=38.86)  # no repeat purchase: never seen to drop out
1.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Unit = Literal["days", "weeks"]
#: Days per model time unit.
UNIT_DAYS: dict[str, int] = {"days": 1, "weeks": 7}

#: A parameter closer than this to a removable singularity of the conditional expectation
#: (``a = 1``; ``a + b = 1`` without repeats) is evaluated as the mean of both sides.
_SINGULAR = 1e-6
_MAX_TERMS = 1_000_000
_RESCALE = 1e250
_LOG_RESCALE = math.log(_RESCALE)


def _expit(u: float) -> float:
    """``1 / (1 + exp(-u))`` without overflow."""
    if u >= 0:
        return 1.0 / (1.0 + math.exp(-u))
    e = math.exp(u)
    return e / (1.0 + e)


def hyp2f1_scaled(a: float, b: float, c: float, z: float) -> tuple[float, float]:
    """Gauss's hypergeometric function ``2F1(a, b; c; z)`` for ``0 <= z < 1`` by its power
    series ``sum_k (a)_k (b)_k / ((c)_k k!) z^k``, as ``(s, e)`` with value ``s * exp(e)``:
    the partial sums are rescaled whenever they grow past 1e250, so the series never
    overflows however large the terms get (``lifetimes`` takes the log of scipy's 2F1 and
    falls back on Euler's transformation when it overflows; see also Fader & Hardie 2013,
    note 027, "Overcoming the BG/NBD Model's #NUM! Error Problem").

    >>> s, e = hyp2f1_scaled(1.0, 1.0, 2.0, 0.5)  # -log(1 - z) / z
    >>> round(s * math.exp(e), 12) == round(2 * math.log(2), 12)
    True

    Raises ``ValueError`` when ``c`` is a non-positive integer (undefined) or the series
    has not converged after a million terms (``z`` extremely close to 1).
    """
    if not 0.0 <= z < 1.0:
        raise ValueError(f"2F1 series needs 0 <= z < 1, got z = {z!r}")
    total, term, log_scale = 1.0, 1.0, 0.0
    # Past this index every factor a+k, b+k, c+k is positive: terms keep their sign, and
    # once they shrink they keep shrinking.
    settled = max(0.0, -a, -b, -c) + 1.0
    for k in range(_MAX_TERMS):
        denominator = (c + k) * (k + 1)
        if denominator == 0.0:
            raise ValueError(f"2F1 is undefined for c = {c!r} (a non-positive integer)")
        ratio = (a + k) * (b + k) / denominator * z
        term *= ratio
        total += term
        if term == 0.0 or (k >= settled and abs(ratio) < 1.0 and abs(term) <= 1e-17 * abs(total)):
            return total, log_scale
        if abs(total) > _RESCALE or abs(term) > _RESCALE:
            total /= _RESCALE
            term /= _RESCALE
            log_scale += _LOG_RESCALE
    raise ValueError(f"2F1({a!r}, {b!r}; {c!r}; {z!r}): the series did not converge")


@dataclass(frozen=True, slots=True)
class BgNbd:
    """BG/NBD population parameters: purchase rates ``Gamma(r, alpha)`` (``alpha`` in the
    model's time unit), drop-out probabilities ``Beta(a, b)``."""

    r: float
    alpha: float
    a: float
    b: float

    def _log_odds_dead(self, x: float, t_x: float, T: float) -> float:
        """``log(a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))`` for x > 0:
        the log of the odds that the customer dropped out right after the last purchase."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        return math.log(a / (b + x - 1.0)) + (r + x) * math.log((alpha + T) / (alpha + t_x))

    def p_alive(self, x: float, t_x: float, T: float) -> float:
        """P(alive | x, t_x, T): the probability that the customer has not dropped out
        (Fader, Hardie & Lee 2008, note 021, "Computing P(alive) Using the BG/NBD Model";
        the reciprocal of the denominator of eq. (10) of the paper)::

            1 / (1 + [x > 0] * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))

        ``x == 0`` gives 1: in the BG/NBD a customer can only drop out right after a
        repeat purchase.
        """
        if x <= 0:
            return 1.0
        return _expit(-self._log_odds_dead(x, t_x, T))

    def expected_purchases(self, t: float, x: float, t_x: float, T: float) -> float:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` units (eq. (10))::

            (a + b + x - 1) / (a - 1)
            * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x)
                   * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t)))
            * P(alive | x, t_x, T)

        With ``z = t / (alpha + T + t)``, ``1 - z = (alpha + T) / (alpha + T + t)`` and
        Euler's transformation ``2F1(A, B; C; z) = (1 - z) ** (C - A - B) * 2F1(C - A,
        C - B; C; z)`` the second factor is ``1 - (1 - z) ** (a - 1) * 2F1(a + b - 1 - r,
        a - 1; a + b + x - 1; z)``: its series has small terms for any ``x`` (the direct
        one is of the order of ``(1 - z) ** (a - 1 - r - x)``, huge for heavy buyers, until
        ``(1 - z) ** (r + x)`` brings it back), and it is summed without overflow in any
        case (:func:`hyp2f1_scaled`).

        >>> m = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> round(m.expected_purchases(39, x=2, t_x=30.43, T=38.86), 3)
        1.226
        """
        if t <= 0:
            return 0.0
        a = self.a
        if abs(a - 1.0) < _SINGULAR or (x <= 0 and abs(a + self.b - 1.0) < _SINGULAR):
            # 0/0 at the point itself, the limit exists: the mean of both sides.
            lo = BgNbd(self.r, self.alpha, a - _SINGULAR, self.b)
            hi = BgNbd(self.r, self.alpha, a + _SINGULAR, self.b)
            return (lo._expected(t, x, t_x, T) + hi._expected(t, x, t_x, T)) / 2.0
        return self._expected(t, x, t_x, T)

    def _expected(self, t: float, x: float, t_x: float, T: float) -> float:
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        c = a + b + x - 1.0
        z = t / (alpha + T + t)
        s, e = hyp2f1_scaled(a + b - 1.0 - r, a - 1.0, c, z)
        if s == 0.0:
            left = 1.0
        else:
            log_product = (a - 1.0) * math.log1p(-z) + e + math.log(abs(s))
            left = -math.expm1(log_product) if s > 0 else 1.0 + math.exp(log_product)
        return c / (a - 1.0) * left * self.p_alive(x, t_x, T)

    def log_likelihood(self, x: float, t_x: float, T: float) -> float:
        """The log-likelihood of one customer's (x, t_x, T) (eq. (6) of the paper)::

            L = B(a, b + x) / B(a, b) * Gamma(r + x) alpha^r / (Gamma(r) (alpha + T)^(r + x))
              + [x > 0] B(a + 1, b + x - 1) / B(a, b)
                        * Gamma(r + x) alpha^r / (Gamma(r) (alpha + t_x)^(r + x))

        summed in log space (``B(a + 1, b + x - 1) / B(a, b + x) = a / (b + x - 1)``).
        The sum over customers is what ``tierstream fit`` maximises (eq. (7)).
        """
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        lg = math.lgamma
        common = (
            lg(r + x) - lg(r) + r * math.log(alpha) + lg(a + b) + lg(b + x) - lg(b) - lg(a + b + x)
        )
        alive = -(r + x) * math.log(alpha + T)
        if x <= 0:
            return common + alive
        dead = math.log(a) - math.log(b + x - 1.0) - (r + x) * math.log(alpha + t_x)
        top = max(alive, dead)
        return common + top + math.log(math.exp(alive - top) + math.exp(dead - top))


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """Gamma-Gamma spend parameters: spend per purchase day ``Gamma(p, nu)``, ``nu ~
    Gamma(q, v)`` over customers; the population's mean spend is ``p * v / (q - 1)``."""

    p: float
    q: float
    v: float

    @property
    def population_mean(self) -> float:
        return self.p * self.v / (self.q - 1.0)

    def expected_average_spend(self, x: float, mean_spend: float) -> float:
        """E[M | x, m_x]: the expected spend per purchase day of a customer with ``x``
        repeat purchase days of mean spend ``mean_spend`` (note 025, eq. (5)): a weighted
        mean of the population's mean and the customer's own::

            (p * v + p * x * m_x) / (p * x + q - 1)

        ``x == 0`` gives the population mean ``p * v / (q - 1)``.

        >>> GammaGamma(p=6.25, q=3.74, v=15.44).expected_average_spend(0, 0.0)  # doctest: +ELLIPSIS
        35.21...
        """
        p, q, v = self.p, self.q, self.v
        if x <= 0:
            return self.population_mean
        return (p * v + p * x * mean_spend) / (p * x + q - 1.0)

    def log_likelihood(self, x: float, mean_spend: float) -> float:
        """The log density of a repeat customer's mean spend ``m_x`` over ``x > 0`` days
        (note 025, the marginal of ``m_x`` after integrating out ``nu``)::

            Gamma(p x + q) / (Gamma(p x) Gamma(q)) * v^q m^(p x - 1) x^(p x) / (v + x m)^(p x + q)
        """
        p, q, v = self.p, self.q, self.v
        px = p * x
        return (
            math.lgamma(px + q)
            - math.lgamma(px)
            - math.lgamma(q)
            + q * math.log(v)
            + (px - 1.0) * math.log(mean_spend)
            + px * math.log(x)
            - (px + q) * math.log(v + x * mean_spend)
        )


@dataclass(frozen=True, slots=True)
class Model:
    """A policy's fitted churn and spend model (the ``model:`` section).

    ``unit`` is the time unit of ``alpha``, ``t_x``, ``T`` and ``t``; ``fitted`` is free-form
    provenance (source file, calibration end, customers, log-likelihood)."""

    unit: Unit
    bgnbd: BgNbd | None
    gamma_gamma: GammaGamma | None
    fitted: Mapping[str, Any]

    @property
    def unit_days(self) -> int:
        """Days per time unit: 1 for days, 7 for weeks.

        >>> Model("weeks", None, None, {}).in_units(14)
        2.0
        """
        return UNIT_DAYS[self.unit]

    def in_units(self, days: float) -> float:
        """A duration in days in the model's unit."""
        return days / self.unit_days


_MODEL_KEYS = ("unit", "bgnbd", "gamma_gamma", "fitted")
_BGNBD_KEYS = ("r", "alpha", "a", "b")
_GAMMA_GAMMA_KEYS = ("p", "q", "v")


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _unknown(raw: Mapping[Any, Any], allowed: tuple[str, ...], path: str) -> list[tuple[str, str]]:
    return [
        (f"{path}.{key}", f"unknown key (allowed: {', '.join(allowed)})")
        for key in raw
        if key not in allowed
    ]


def _params(
    raw: Any, keys: tuple[str, ...], path: str, problems: list[tuple[str, str]]
) -> dict[str, float] | None:
    if not isinstance(raw, Mapping):
        problems.append((path, f"must be a mapping with {', '.join(keys)}, got {raw!r}"))
        return None
    before = len(problems)
    problems.extend(_unknown(raw, keys, path))
    values: dict[str, float] = {}
    for key in keys:
        if key not in raw:
            problems.append((f"{path}.{key}", "required: a positive number"))
        elif not _positive(raw[key]):
            problems.append((f"{path}.{key}", f"must be a positive number, got {raw[key]!r}"))
        else:
            values[key] = float(raw[key])
    return values if len(problems) == before else None


def parse_model(raw: Any, path: str, problems: list[tuple[str, str]]) -> Model | None:
    """Validate a policy's ``model:`` section; each problem is appended as ``(path,
    message)``, and the result is None when there was any.

    >>> problems = []
    >>> parse_model({"unit": "weeks", "bgnbd": {"r": 0.2, "alpha": "x", "a": 1, "b": 2}},
    ...             "model", problems)
    >>> problems
    [('model.bgnbd.alpha', "must be a positive number, got 'x'")]
    """
    if not isinstance(raw, Mapping):
        problems.append((path, "must be a mapping with unit, bgnbd and/or gamma_gamma, fitted"))
        return None
    before = len(problems)
    problems.extend(_unknown(raw, _MODEL_KEYS, path))
    unit = raw.get("unit")
    if unit not in UNIT_DAYS:
        problems.append((f"{path}.unit", f"required: days or weeks, got {unit!r}"))
    bgnbd: BgNbd | None = None
    if "bgnbd" in raw:
        values = _params(raw["bgnbd"], _BGNBD_KEYS, f"{path}.bgnbd", problems)
        if values is not None:
            bgnbd = BgNbd(**values)
    gamma_gamma: GammaGamma | None = None
    if "gamma_gamma" in raw:
        gpath = f"{path}.gamma_gamma"
        values = _params(raw["gamma_gamma"], _GAMMA_GAMMA_KEYS, gpath, problems)
        if values is not None and values["q"] <= 1.0:
            problems.append(
                (
                    f"{gpath}.q",
                    f"must be greater than 1 (the mean spend p*v/(q-1) is finite only then), "
                    f"got {raw['gamma_gamma']['q']!r}",
                )
            )
        elif values is not None:
            gamma_gamma = GammaGamma(**values)
    if "bgnbd" not in raw and "gamma_gamma" not in raw:
        problems.append((path, "needs bgnbd and/or gamma_gamma parameters"))
    fitted = raw.get("fitted", {})
    if not isinstance(fitted, Mapping):
        problems.append((f"{path}.fitted", f"must be a mapping (free-form), got {fitted!r}"))
    if len(problems) > before:
        return None
    return Model("weeks" if unit == "weeks" else "days", bgnbd, gamma_gamma, dict(fitted))


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _number(value: float) -> str:
    """6 significant digits, always read back as a number (``1e+06`` would be text to a
    YAML 1.1 reader: it needs a dot)."""
    text = f"{value:.6g}"
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return _number(value)
        return ".nan" if value != value else ".inf" if value > 0 else "-.inf"
    if isinstance(value, Mapping):
        return _flow(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _quote(str(value))


def _quote(text: str) -> str:
    """A double-quoted YAML scalar (JSON's escapes are YAML's)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(ch if ch >= " " else f"\\x{ord(ch):02x}" for ch in escaped)
    return f'"{escaped}"'


def _flow(values: Mapping[str, Any]) -> str:
    items = ", ".join(
        f"{k if _PLAIN_KEY.match(str(k)) else _quote(str(k))}: {_scalar(v)}"
        for k, v in values.items()
    )
    return "{" + items + "}"


def model_to_yaml(model: Model) -> str:
    """The ``model:`` block of a policy (ends with a newline); parameters to 6
    significant digits.

    >>> print(model_to_yaml(Model("weeks", BgNbd(0.2425946, 4.413603, 0.7929218, 2.425906),
    ...                           None, {"until": "1997-09-30", "customers": 2357})), end="")
    model:                      # written by `tierstream fit`
      unit: weeks               # days | weeks
      bgnbd: {r: 0.242595, alpha: 4.4136, a: 0.792922, b: 2.42591}
      fitted: {until: "1997-09-30", customers: 2357}
    """
    lines = [
        "model:                      # written by `tierstream fit`",
        f"  unit: {model.unit:<20}# days | weeks",
    ]
    if model.bgnbd is not None:
        m = model.bgnbd
        lines.append(f"  bgnbd: {_flow({'r': m.r, 'alpha': m.alpha, 'a': m.a, 'b': m.b})}")
    if model.gamma_gamma is not None:
        g = model.gamma_gamma
        lines.append(f"  gamma_gamma: {_flow({'p': g.p, 'q': g.q, 'v': g.v})}")
    if model.fitted:
        lines.append(f"  fitted: {_flow(model.fitted)}")
    return "\n".join(lines) + "\n"
