"""BG/NBD and Gamma-Gamma (app.domain.bgnbd, app.tools.fit, ``tierstream fit``).

The reference is the paper (Fader, Hardie & Lee 2005: CDNOW, 2,357 customers, calibrated
on the 39 weeks to 1997-09-30: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4)
and the ``lifetimes`` package (``BetaGeoFitter``, ``GammaGammaFitter``; test dependency
only), on the CDNOW sample transactions it ships.
"""

from __future__ import annotations

import math
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from scipy.special import hyp2f1
from typer.testing import CliRunner

from app.adapters.files import parse_map, read_events
from app.cli.main import cli
from app.domain.bgnbd import (
    BgNbd,
    GammaGamma,
    Model,
    hyp2f1_scaled,
    model_to_yaml,
    parse_model,
)
from app.service.batch_replay import decode_lines
from app.tools.fit import (
    FitError,
    FitResult,
    bgnbd_log_likelihood,
    fit_events,
    replace_model_block,
    summarize,
)
from schemas.codec import parse_timestamp
from tests.kit.builders import DAY, at, purchase, refund

pd = pytest.importorskip("pandas")
with warnings.catch_warnings():  # lifetimes 0.11 sets a pandas option pandas 3 deprecates
    warnings.simplefilter("ignore")
    lifetimes = pytest.importorskip("lifetimes")
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.datasets import load_cdnow_summary

CDNOW = Path(str(resources.files("lifetimes").joinpath("datasets/CDNOW_sample.txt")))
CDNOW_MAP = "customer_id=1,occurred_at=3,quantity=4,amount=5"
UNTIL = "1997-09-30"
PAPER = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PAPER_LL = -9582.4


def _cdnow_events() -> list[Any]:
    lines = read_events(
        CDNOW, fmt="csv", mapping=parse_map(CDNOW_MAP), delimiter="whitespace", header=False
    )
    events, rejected = decode_lines(lines)
    assert rejected == [] and len(events) == 6919
    return events


@pytest.fixture(scope="module")
def cdnow_events() -> list[Any]:
    return _cdnow_events()


@pytest.fixture(scope="module")
def weeks(cdnow_events: list[Any]) -> FitResult:
    return fit_events(cdnow_events, parse_timestamp(UNTIL), "weeks", "CDNOW_sample.txt")


def _bg(model: BgNbd) -> Any:
    f = BetaGeoFitter()
    f.params_ = pd.Series({"r": model.r, "alpha": model.alpha, "a": model.a, "b": model.b})
    return f


def _rel(ours: Any, theirs: Any) -> float:
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-300)))


# --- the paper --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PAPER))
def test_cdnow_calibration_gives_the_papers_estimates(weeks: FitResult, name: str) -> None:
    assert weeks.model.bgnbd is not None
    got = getattr(weeks.model.bgnbd, name)
    assert got == pytest.approx(PAPER[name], rel=0.01), (name, got)


def test_cdnow_calibration_counts_and_log_likelihood(weeks: FitResult) -> None:
    assert (weeks.customers, weeks.repeat_customers) == (2357, 946)
    assert weeks.log_likelihood == pytest.approx(PAPER_LL, abs=0.05)
    assert weeks.model.fitted == {
        "events": "CDNOW_sample.txt",
        "until": UNTIL,
        "customers": 2357,
        "repeat_customers": 946,
        "log_likelihood": pytest.approx(PAPER_LL, abs=0.05),
        "spend_log_likelihood": pytest.approx(-4055.92, abs=0.01),
    }
    assert weeks.summaries.later == 6919 - 4960


def test_weeks_are_days_over_7_as_in_the_papers_summary(weeks: FitResult) -> None:
    """The paper's own summary (``cdnow_customers_summary.csv`` in lifetimes: ID = the
    customer index of the transaction file, times in weeks to 2 decimals) is our day-based
    RFM with recency and T divided by 7 (not lifetimes' calendar-week ``freq='W'``)."""
    index = {}
    for line in CDNOW.read_text().splitlines():
        if line.strip():
            cid, idx = line.split()[:2]
            index[cid] = int(idx)
    paper = load_cdnow_summary().set_index("ID")
    s = weeks.summaries
    got = pd.DataFrame(
        {"frequency": s.frequency, "recency": s.recency, "T": s.T},
        index=[index[c] for c in s.customer_ids],
    ).sort_index()
    assert list(got.index) == list(paper.index)
    assert (got["frequency"].to_numpy() == paper["frequency"].to_numpy()).all()
    assert np.max(np.abs(got["recency"].to_numpy() - paper["recency"].to_numpy())) <= 0.005
    assert np.max(np.abs(got["T"].to_numpy() - paper["T"].to_numpy())) <= 0.005


def test_fit_equals_lifetimes_fit_on_the_same_summaries(weeks: FitResult) -> None:
    s = weeks.summaries
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = BetaGeoFitter().fit(s.frequency, s.recency, s.T).params_
    ours = weeks.model.bgnbd
    assert ours is not None
    for name in ("r", "alpha", "a", "b"):
        assert getattr(ours, name) == pytest.approx(ref[name], rel=1e-4), name


def test_days_and_weeks_are_the_same_model(cdnow_events: list[Any], weeks: FitResult) -> None:
    days = fit_events(cdnow_events, parse_timestamp(UNTIL), "days")
    d, w = days.model.bgnbd, weeks.model.bgnbd
    assert d is not None and w is not None
    assert (d.r, d.a, d.b) == pytest.approx((w.r, w.a, w.b), rel=1e-5)
    assert d.alpha == pytest.approx(7 * w.alpha, rel=1e-5)
    # Densities per day instead of per week: LL shifts by (repeat purchases) * log 7.
    shift = float(weeks.summaries.frequency.sum()) * math.log(7)
    assert days.log_likelihood == pytest.approx(weeks.log_likelihood - shift, abs=0.01)
    assert days.model.fitted["until"] == UNTIL and "events" not in days.model.fitted


# --- the same parameters as lifetimes ---------------------------------------------------


def test_p_alive_equals_lifetimes_for_every_customer(weeks: FitResult) -> None:
    m, s = weeks.model.bgnbd, weeks.summaries
    assert m is not None
    ref = _bg(m).conditional_probability_alive(s.frequency, s.recency, s.T)
    ours = [m.p_alive(*row) for row in zip(s.frequency, s.recency, s.T, strict=True)]
    assert _rel(ours, ref) < 1e-9  # measured: 3e-16


@pytest.mark.parametrize("t", [1.0, 39.0, 52.0, 104.0])
def test_expected_purchases_equal_lifetimes_for_every_customer(weeks: FitResult, t: float) -> None:
    m, s = weeks.model.bgnbd, weeks.summaries
    assert m is not None
    ref = _bg(m).conditional_expected_number_of_purchases_up_to_time(t, s.frequency, s.recency, s.T)
    ours = [m.expected_purchases(t, *row) for row in zip(s.frequency, s.recency, s.T, strict=True)]
    assert _rel(ours, ref) < 1e-9  # measured: 1e-12


EXTREMES = [
    # (r, alpha, a, b, t, x, t_x, T): heavy buyers, long horizons, a > 1, large a and b
    (0.243, 4.414, 0.793, 2.426, 520.0, 500, 30.0, 38.86),
    (0.243, 4.414, 0.793, 2.426, 5.0, 2000, 38.0, 38.86),
    (2.0, 30.0, 3.5, 12.0, 365.0, 40, 300.0, 365.0),
    (0.5, 10.0, 40.0, 160.0, 2000.0, 0, 0.0, 10.0),
    (0.5, 10.0, 0.2, 0.3, 100.0, 0, 0.0, 10.0),  # a + b < 1: 2F1 < 0, lifetimes' log: nan
    (1.5, 0.2, 0.9, 1.1, 30.0, 3, 0.5, 1.0),
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # lifetimes' log of a negative 2F1
@pytest.mark.parametrize(("r", "alpha", "a", "b", "t", "x", "t_x", "T"), EXTREMES)
def test_extremes_equal_lifetimes(
    r: float, alpha: float, a: float, b: float, t: float, x: int, t_x: float, T: float
) -> None:
    m = BgNbd(r, alpha, a, b)
    ref = _bg(m)
    got = m.expected_purchases(t, x, t_x, T)
    assert math.isfinite(got)
    want = float(ref.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T))
    if math.isnan(want):  # eq. (10) as written, with scipy's 2F1
        z = t / (alpha + T + t)
        c = a + b + x - 1
        want = c / (a - 1) * (1 - (1 - z) ** (r + x) * float(hyp2f1(r + x, b + x, c, z)))
        want *= m.p_alive(x, t_x, T)
    assert got == pytest.approx(want, rel=1e-8)
    assert m.p_alive(x, t_x, T) == pytest.approx(
        float(ref.conditional_probability_alive(x, t_x, T)[0]), rel=1e-12
    )


def test_expected_purchases_is_continuous_through_a_equal_1() -> None:
    """``(a + b + x - 1) / (a - 1)`` is 0/0 at a = 1; the limit is taken."""
    for x, t_x in ((0, 0.0), (3, 20.0)):
        values = [
            BgNbd(0.3, 5.0, a, 2.0).expected_purchases(52.0, x, t_x, 40.0)
            for a in (1 - 1e-3, 1.0, 1 + 1e-3)
        ]
        assert all(math.isfinite(v) and v > 0 for v in values)
        assert values[1] == pytest.approx((values[0] + values[2]) / 2, rel=1e-6)
    assert BgNbd(0.3, 5.0, 1.5, 2.0).expected_purchases(0.0, 3, 20.0, 40.0) == 0.0


def test_log_likelihood_scalar_equals_vectorised(weeks: FitResult) -> None:
    m, s = weeks.model.bgnbd, weeks.summaries
    assert m is not None
    scalar = [m.log_likelihood(*row) for row in zip(s.frequency, s.recency, s.T, strict=True)]
    assert _rel(scalar, bgnbd_log_likelihood(m, s.frequency, s.recency, s.T)) < 1e-12
    assert math.fsum(scalar) == pytest.approx(weeks.log_likelihood, abs=1e-6)


HYP2F1 = [
    # (a, b, c, z): closed forms, terminating series, and values far past float range
    (1.0, 1.0, 2.0, 0.5),
    (0.7, 2.5, 3.1, 0.92),
    (-3.0, 2.0, 1.5, 0.7),  # a polynomial
    (-0.21, 2.2, 0.25, 0.99),
    (1000.0, 1000.5, 0.5, 0.25),  # ((1 + 0.5) ** -2000 + (1 - 0.5) ** -2000) / 2 ~ 1e602
    (3000.0, 2.0, 2.0, 0.9),  # (1 - z) ** -3000 = 1e3000
]


@pytest.mark.parametrize(("a", "b", "c", "z"), HYP2F1)
def test_hyp2f1_series(a: float, b: float, c: float, z: float) -> None:
    s, e = hyp2f1_scaled(a, b, c, z)
    if e == 0.0:
        assert s == pytest.approx(float(hyp2f1(a, b, c, z)), rel=1e-12)
    else:  # past float range: compare logs with a transformation scipy can evaluate
        assert s > 0
        if b == c:  # (1 - z) ** -a
            want = -a * math.log1p(-z)
        else:  # 2F1(a, a + 1/2; 1/2; w**2) = ((1 + w) ** -2a + (1 - w) ** -2a) / 2
            w = math.sqrt(z)
            want = (
                -2 * a * math.log1p(-w) + math.log1p(((1 - w) / (1 + w)) ** (2 * a)) - math.log(2)
            )
        assert math.log(s) + e == pytest.approx(want, rel=1e-12)


def test_hyp2f1_domain() -> None:
    with pytest.raises(ValueError, match="z < 1"):
        hyp2f1_scaled(1.0, 1.0, 2.0, 1.0)
    with pytest.raises(ValueError, match="non-positive integer"):
        hyp2f1_scaled(1.5, 1.0, -2.0, 0.5)


# --- Gamma-Gamma ------------------------------------------------------------------------


def test_gamma_gamma_fit_and_spend_equal_lifetimes(weeks: FitResult) -> None:
    g, s = weeks.model.gamma_gamma, weeks.summaries
    assert g is not None and weeks.spend_customers == 946
    repeat = s.frequency > 0
    x, m = s.frequency[repeat], s.monetary_value[repeat]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = GammaGammaFitter().fit(x, m)
    for name in ("p", "q", "v"):
        assert getattr(g, name) == pytest.approx(fitted.params_[name], rel=1e-4), name
    # lifetimes' documentation of the same data: p = 6.25, q = 3.74, v = 15.44
    assert (g.p, g.q, g.v) == pytest.approx((6.25, 3.74, 15.44), abs=0.01)
    ref = GammaGammaFitter()
    ref.params_ = pd.Series({"p": g.p, "q": g.q, "v": g.v})
    want = ref.conditional_expected_average_profit(
        pd.Series(s.frequency), pd.Series(s.monetary_value)
    )
    ours = [
        g.expected_average_spend(f, mv) for f, mv in zip(s.frequency, s.monetary_value, strict=True)
    ]
    assert _rel(ours, want) < 1e-12
    assert g.expected_average_spend(0, 123.0) == pytest.approx(g.p * g.v / (g.q - 1))
    ll = math.fsum(g.log_likelihood(f, mv) for f, mv in zip(x, m, strict=True))
    assert weeks.spend_log_likelihood == pytest.approx(ll, abs=1e-6)


# --- parsing and writing the model block ------------------------------------------------

GOOD = {"unit": "weeks", "bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}}

PARSE_ERRORS: list[tuple[Any, list[tuple[str, str]]]] = [
    ("weeks", [("model", "must be a mapping with unit, bgnbd and/or gamma_gamma, fitted")]),
    ({**GOOD, "unit": "months"}, [("model.unit", "required: days or weeks, got 'months'")]),
    (
        {k: v for k, v in GOOD.items() if k != "unit"},
        [("model.unit", "required: days or weeks, got None")],
    ),
    (
        {**GOOD, "bgnbd": {"r": 0.2, "alpha": "x", "a": 1, "b": 2}},
        [("model.bgnbd.alpha", "must be a positive number, got 'x'")],
    ),
    (
        {**GOOD, "bgnbd": {"r": 0, "alpha": -1, "a": True, "b": float("nan")}},
        [
            ("model.bgnbd.r", "must be a positive number, got 0"),
            ("model.bgnbd.alpha", "must be a positive number, got -1"),
            ("model.bgnbd.a", "must be a positive number, got True"),
            ("model.bgnbd.b", "must be a positive number, got nan"),
        ],
    ),
    (
        {**GOOD, "bgnbd": {"r": 0.2, "alpha": 4, "a": 1, "beta": 2}},
        [
            ("model.bgnbd.beta", "unknown key (allowed: r, alpha, a, b)"),
            ("model.bgnbd.b", "required: a positive number"),
        ],
    ),
    (
        {**GOOD, "bgnbd": [1, 2]},
        [("model.bgnbd", "must be a mapping with r, alpha, a, b, got [1, 2]")],
    ),
    (
        {**GOOD, "gamma_gamma": {"p": 6, "q": 0.5, "v": 15}},
        [
            (
                "model.gamma_gamma.q",
                "must be greater than 1 (the mean spend p*v/(q-1) is finite only then), got 0.5",
            )
        ],
    ),
    ({"unit": "days"}, [("model", "needs bgnbd and/or gamma_gamma parameters")]),
    (
        {**GOOD, "fitted": "yesterday"},
        [("model.fitted", "must be a mapping (free-form), got 'yesterday'")],
    ),
    (
        {**GOOD, "params": {}},
        [("model.params", "unknown key (allowed: unit, bgnbd, gamma_gamma, fitted)")],
    ),
]


@pytest.mark.parametrize(("raw", "problems"), PARSE_ERRORS)
def test_parse_model_names_the_path(raw: Any, problems: list[tuple[str, str]]) -> None:
    got: list[tuple[str, str]] = []
    assert parse_model(raw, "model", got) is None
    assert got == problems


def test_parse_model_accepts_either_model() -> None:
    problems: list[tuple[str, str]] = []
    only_spend = parse_model(
        {"unit": "days", "gamma_gamma": {"p": 6, "q": 3, "v": 15}}, "m", problems
    )
    assert problems == [] and only_spend == Model("days", None, GammaGamma(6.0, 3.0, 15.0), {})
    assert only_spend.unit_days == 1 and only_spend.in_units(3.5) == 3.5
    both = parse_model({**GOOD, "fitted": {"customers": 5}}, "m", problems)
    assert problems == [] and both is not None and both.bgnbd == BgNbd(0.243, 4.414, 0.793, 2.426)
    assert both.unit_days == 7 and both.fitted == {"customers": 5}


ROUND_TRIP = [
    Model("weeks", BgNbd(0.2425945224, 4.41360202, 0.792922018, 2.42590678), None, {}),
    Model(
        "days",
        BgNbd(1.234567891e-7, 1234567.891, 12.5, 1e6),
        GammaGamma(6.249572271, 3.744224667, 15.44352096),
        {
            "events": "odd: name #1 \"x\" 'y'.jsonl",
            "until": "1997-09-30",
            "customers": 2357,
            "log_likelihood": -9582.43,
            "flag": True,
            "none": None,
        },
    ),
]


@pytest.mark.parametrize("model", ROUND_TRIP)
def test_model_to_yaml_round_trips(model: Model) -> None:
    text = model_to_yaml(model)
    assert text.startswith("model:") and text.endswith("\n")
    assert "# written by `tierstream fit`" in text.splitlines()[0]
    problems: list[tuple[str, str]] = []
    back = parse_model(yaml.safe_load(text)["model"], "model", problems)
    assert problems == [] and back is not None
    assert back.unit == model.unit and back.fitted == model.fitted
    for ours, theirs in ((back.bgnbd, model.bgnbd), (back.gamma_gamma, model.gamma_gamma)):
        if theirs is None:
            assert ours is None
            continue
        assert ours is not None
        for name in theirs.__slots__:
            assert getattr(ours, name) == pytest.approx(getattr(theirs, name), rel=5e-6)


BLOCK = "model:  # new\n  unit: weeks\n"
REPLACE = [
    # (policy text, expected): appended, replaced in the middle (the next key's comments
    # stay), at the end, in flow style, without a final newline
    ("name: p\ntiers: [{name: all}]\n", "name: p\ntiers: [{name: all}]\n\n" + BLOCK),
    ("name: p\ntiers: [{name: all}]", "name: p\ntiers: [{name: all}]\n\n" + BLOCK),
    (
        "name: p  # keep\nmodel:\n  unit: days\n  # old comment\n  bgnbd: {r: 1}\n\n"
        "# the tiers\ntiers:\n  - name: all  # keep\n",
        "name: p  # keep\n" + BLOCK + "\n# the tiers\ntiers:\n  - name: all  # keep\n",
    ),
    ("tiers: []\nmodel: {unit: days}\n", "tiers: []\n" + BLOCK),
    ("tiers: []\nmodel:\n  unit: days\n# trailing\n", "tiers: []\n" + BLOCK + "# trailing\n"),
    ("a: 1\nmodeling: 2\n", "a: 1\nmodeling: 2\n\n" + BLOCK),
]


@pytest.mark.parametrize(("text", "expected"), REPLACE)
def test_replace_model_block(text: str, expected: str) -> None:
    assert replace_model_block(text, BLOCK) == expected


# --- errors -----------------------------------------------------------------------------

T0 = at("2024-01-01T10:00:00")
FIT_ERRORS = [
    ([], "no purchase events"),
    ([refund("c1", 5.0, T0, "r1")], "only refunds"),
    ([purchase(f"c{i}", 10.0, T0 + i * DAY, f"p{i}") for i in range(5)], "no repeat customers"),
    ([purchase("c1", 10.0, T0, "p1"), purchase("c1", 5.0, T0 + 1000, "p2")], "no repeat"),
]


@pytest.mark.parametrize(("events", "message"), FIT_ERRORS)
def test_fit_errors(events: list[Any], message: str) -> None:
    with pytest.raises(FitError, match=message):
        fit_events(events, None, "days")


def test_until_before_every_purchase() -> None:
    events = [purchase("c1", 10.0, T0 + 10 * DAY, "p1")]
    with pytest.raises(FitError, match="on or before the end"):
        summarize(events, T0, "days")


# --- the command ------------------------------------------------------------------------


def run(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args)


@pytest.fixture(scope="module")
def cdnow_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CDNOW sample as JSON Lines events."""
    path = tmp_path_factory.mktemp("fit") / "cdnow.jsonl"
    with path.open("wb") as out:
        for n, line in enumerate(CDNOW.read_text().splitlines(), 1):
            if not line.strip():
                continue
            cid, _idx, ymd, qty, amount = line.split()
            doc = {
                "event_id": f"cdnow-{n}",
                "customer_id": cid,
                "type": "purchase",
                "occurred_at": f"{ymd[:4]}-{ymd[4:6]}-{ymd[6:]}",
                "quantity": int(qty),
                "amount": float(amount),
            }
            out.write(orjson.dumps(doc) + b"\n")
    return path


def _block(stdout: str) -> dict[str, Any]:
    start = stdout.index("model:")
    doc = yaml.safe_load(stdout[start:])
    assert isinstance(doc, dict)
    return doc["model"]  # type: ignore[no-any-return]


def test_fit_command_on_cdnow_jsonl(cdnow_jsonl: Path) -> None:
    result = run(["fit", str(cdnow_jsonl), "--until", UNTIL])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("model:")  # only the block on stdout
    model = _block(result.stdout)
    assert model["unit"] == "weeks"
    for name, value in PAPER.items():
        assert model["bgnbd"][name] == pytest.approx(value, rel=0.01)
    assert model["gamma_gamma"] == pytest.approx({"p": 6.25, "q": 3.74, "v": 15.44}, abs=0.01)
    assert model["fitted"]["events"] == "cdnow.jsonl"
    assert model["fitted"]["until"] == UNTIL and model["fitted"]["customers"] == 2357
    # the summary (stderr)
    for text in ("2,357", "946", "-9,582.43", "0.242595", "4.4136", "after the calibration"):
        assert text in result.stderr, text


def test_fit_command_csv_map_gives_the_same_block(cdnow_jsonl: Path) -> None:
    jsonl = run(["fit", str(cdnow_jsonl), "--until", UNTIL, "--unit", "days", "-q"])
    csv = run(
        [
            "fit",
            str(CDNOW),
            "--format",
            "csv",
            "--delimiter",
            "whitespace",
            "--no-header",
            "--map",
            CDNOW_MAP,
            "--until",
            UNTIL,
            "--unit",
            "days",
            "-q",
        ]
    )
    assert jsonl.exit_code == csv.exit_code == 0, csv.output
    assert jsonl.stderr == csv.stderr == ""
    a, b = _block(jsonl.stdout), _block(csv.stdout)
    assert a["unit"] == "days" and a["bgnbd"]["alpha"] == pytest.approx(7 * 4.414, rel=0.01)
    a["fitted"].pop("events"), b["fitted"].pop("events")
    assert a == b


POLICY = """\
# Our tiers. Comments everywhere must survive.
name: value-tiers   # the name
version: "7"
tiers:
  - name: A          # best
    when: {spend_365d: {gte: 3000}}
  - name: D
# the old model, to be replaced
model:
  unit: days
  bgnbd: {r: 1, alpha: 2, a: 3, b: 4}

# lifecycle rules follow
lifecycle:
  at_risk_after_days: 60   # two months
"""


def test_fit_writes_the_model_into_a_policy_keeping_comments(
    cdnow_jsonl: Path, tmp_path: Path
) -> None:
    from app.adapters.policy_files import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    checked = run(["fit", str(cdnow_jsonl), "--until", UNTIL, "--policy", str(path), "-q"])
    assert checked.exit_code == 0, checked.output
    assert "--write writes it" in checked.stderr
    assert path.read_text() == POLICY  # only checked
    written = run(
        ["fit", str(cdnow_jsonl), "--until", UNTIL, "--policy", str(path), "--write", "-q"]
    )
    assert written.exit_code == 0, written.output
    text = path.read_text()
    head, _, tail = POLICY.partition("model:\n")
    assert text.startswith(head) and text.endswith(tail[tail.index("\n# lifecycle") :])
    assert text[len(head) :].startswith(written.stdout)  # the printed block, as printed
    policy = load_policy(path)
    model = policy.model
    assert model is not None and model.unit == "weeks" and model.bgnbd is not None
    assert model.bgnbd.r == pytest.approx(PAPER["r"], rel=0.01)
    assert policy.lifecycle.at_risk_after_days == 60
    # again: replaced, not appended a second time
    run(["fit", str(cdnow_jsonl), "--until", UNTIL, "--policy", str(path), "--write", "-q"])
    assert path.read_text() == text


def test_fit_does_not_write_a_policy_that_would_not_load(cdnow_jsonl: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    bad = POLICY.replace("{gte: 3000}", "{gte: lots}")
    path.write_text(bad)
    result = run(
        ["fit", str(cdnow_jsonl), "--until", UNTIL, "--policy", str(path), "--write", "-q"]
    )
    assert result.exit_code == 1
    assert "not written" in result.stderr and "tiers[0].when.spend_365d.gte" in result.stderr
    assert path.read_text() == bad


def test_fit_command_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run(["fit", str(empty)])
    assert isinstance(result.exception, FitError) and "no purchase events" in str(result.exception)
    one = tmp_path / "one.jsonl"
    one.write_text(
        '{"event_id":"a","customer_id":"c1","type":"purchase","occurred_at":"2024-01-01",'
        '"amount":5}\n'
    )
    result = run(["fit", str(one)])
    assert isinstance(result.exception, FitError) and "no repeat customers" in str(result.exception)
    for args, message in (
        (["--unit", "months"], "--unit must be days or weeks"),
        (["--write"], "--write needs --policy"),
        (["--until", "soon"], "--until"),
    ):
        result = run(["fit", str(one), *args])
        assert message in str(result.exception), args
