"""Loading policy files (YAML) into validated :class:`app.domain.policy.Policy` objects.

Every error is a :class:`PolicyError` naming the source (the file), the place (a YAML
line and column, or a path such as ``tiers[2].when.spend_90d``) and what is wrong.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import yaml

from app.domain.errors import PolicyError
from app.domain.policy import Policy
from app.domain.policy_doc import policy_from_dict
from app.domain.population import Cutoffs

DEFAULT_POLICY = "default_policy.yaml"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one,
    quietly dropping a condition)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        if key in seen:
            mark = key_node.start_mark
            raise PolicyError(
                "",
                [(f"line {mark.line + 1}, column {mark.column + 1}", f"duplicate key {key!r}")],
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))  # type: ignore[no-untyped-call]


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy from YAML text.

    >>> parse_policy("name: p\\nversion: 1\\ntiers: [{name: all}]").name
    'p'
    """
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except PolicyError as exc:
        raise PolicyError(source, exc.problems) from None
    except yaml.YAMLError as exc:
        raise PolicyError(source, [_yaml_problem(exc)]) from None
    return policy_from_dict(doc, source)


def _yaml_problem(exc: yaml.YAMLError) -> tuple[str, str]:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "$"
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return where, f"not valid YAML: {problem}" + (f" ({context})" if context else "")


def load_policy(path: Path | str | None = None) -> Policy:
    """Load and validate a policy; ``None`` loads the one shipped in the package."""
    if path is None:
        text = resources.files("app.domain").joinpath(DEFAULT_POLICY).read_text("utf-8")
        source = f"<packaged {DEFAULT_POLICY}>"
    else:
        p = Path(path)
        try:
            text = p.read_text("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(str(p), [("$", f"not UTF-8 text: {exc.reason}")]) from None
        except OSError as exc:
            raise PolicyError(str(p), [("$", f"cannot read file: {exc.strerror or exc}")]) from exc
        source = str(p)
    return parse_policy(text, source)


def load_cutoffs(path: Path | str) -> Cutoffs:
    """Population cut-offs from a JSON file (the form the workers publish)."""
    p = Path(path)
    try:
        raw = orjson.loads(p.read_bytes())
    except OSError as exc:
        raise PolicyError(str(p), [("$", f"cannot read file: {exc.strerror or exc}")]) from exc
    except orjson.JSONDecodeError as exc:
        raise PolicyError(str(p), [("$", f"not valid JSON: {exc}")]) from None
    try:
        return Cutoffs.from_dict(raw)
    except PolicyError as exc:
        raise PolicyError(str(p), exc.problems) from None


def describe_policy(policy: Policy) -> str:
    """One paragraph for ``tierstream policy check``: what the policy is and uses."""
    tiers = ", ".join(t.name for t in policy.tiers)
    lines = [
        f"{policy.name} version {policy.version}: {len(policy.tiers)} tiers, best first: {tiers}",
        "features used: " + (", ".join(policy.features_used) or "none"),
    ]
    if policy.currency:
        lines.append(f"currency: {policy.currency}")
    if policy.derived:
        lines.append("derived: " + ", ".join(f"{n} = {e.source}" for n, e in policy.derived))
    if policy.scorecard is not None:
        factors = ", ".join(f"{f.name} {f.weight:g}" for f in policy.scorecard.factors)
        lines.append(f"scorecard: {factors}")
    if policy.rfm is not None:
        how = ", ".join(
            f"{s.slot} {s.feature} ({'quintiles' if s.edges is None else 'bands'})"
            for s in policy.rfm.scores
        )
        lines.append(f"rfm: {how}")
    if policy.ranked:
        ranked = ", ".join(
            f"{m} at {'/'.join(f'{p:g}' for p in ps)}" for m, ps in policy.ranked.items()
        )
        lines.append(f"ranked over the population: {ranked}")
    h = policy.hysteresis
    if h.min_days_in_tier or h.demotion_grace_days or any(t.stay for t in policy.tiers):
        stays = ", ".join(t.name for t in policy.tiers if t.stay is not None) or "none"
        lines.append(
            f"hysteresis: min {h.min_days_in_tier:g} days in tier, demotion grace "
            f"{h.demotion_grace_days:g} days, stay conditions on: {stays}"
        )
    lc = policy.lifecycle
    lines.append(
        f"lifecycle: at risk after {lc.at_risk_after_days:g} days silent, churned after "
        f"{lc.churned_after_days:g}"
    )
    if policy.upgrade is not None:
        lines.append("upgrade candidates watched in: " + ", ".join(sorted(policy.upgrade.tiers)))
    if policy.churn is not None:
        ch = policy.churn
        signals = sorted({c.feature for c in ch.conditions})
        lines.append(
            f"churn warnings: levels {', '.join(s.name for s in ch.severities)} "
            f"(highest first) on {', '.join(signals)}; usual gap {ch.usual_gap.of} of "
            f"the customer's gaps (default {ch.usual_gap.default_days:g} days below "
            f"{ch.usual_gap.min_gaps} gaps); actions for "
            f"{', '.join(sorted(ch.actions)) or 'no tier'}"
        )
    if policy.model is not None:
        m = policy.model
        parts = []
        if m.bgnbd is not None:
            b = m.bgnbd
            parts.append(f"BG/NBD r {b.r:g}, alpha {b.alpha:g}, a {b.a:g}, b {b.b:g}")
        if m.gamma_gamma is not None:
            g = m.gamma_gamma
            parts.append(f"Gamma-Gamma p {g.p:g}, q {g.q:g}, v {g.v:g}")
        lines.append(f"model ({m.unit}): " + "; ".join(parts))
    return "\n".join(lines)
