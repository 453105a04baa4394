"""Policies pinned for the tests: copies in ``tests/kit/policies/``, so that a change of
the packaged default (``app/domain/default_policy.yaml``) or of ``examples/`` does not
move a test about behaviour. A test *of* the packaged default (that it is valid, what the
demo or ``classify`` uses without ``--policy``) loads it with ``load_policy()``.

>>> VALUE_TIERS_V2.name, VALUE_TIERS_V2.version, [t.name for t in VALUE_TIERS_V2.tiers]
('value-tiers', '2', ['A', 'B', 'C', 'D'])
>>> sorted(p.name for p in PINNED.glob("*.yaml"))  # doctest: +NORMALIZE_WHITESPACE
['churn-early-warning.yaml', 'real-estate-scorecard.yaml', 'rfm-quintiles.yaml',
 'value-tiers-v2.yaml']
"""

from __future__ import annotations

from pathlib import Path

from app.adapters.policy_files import load_policy
from app.domain.policy import Policy

#: The folder of the pinned policy files.
PINNED = Path(__file__).with_name("policies")


def pinned(name: str) -> Policy:
    """The pinned policy file ``name`` (e.g. ``"rfm-quintiles.yaml"``), loaded."""
    return load_policy(PINNED / name)


#: Value tiers A/B/C/D, version 2: the packaged default when it was pinned (and its
#: file, for a command's ``--policy``).
VALUE_TIERS_V2_FILE = PINNED / "value-tiers-v2.yaml"
VALUE_TIERS_V2 = load_policy(VALUE_TIERS_V2_FILE)
