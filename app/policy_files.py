"""Loading policy files (YAML) into validated :class:`app.domain.policy.Policy` objects."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from app.domain.errors import PolicyError
from app.domain.policy import Policy, policy_from_dict

DEFAULT_POLICY = "default_policy.yaml"


def load_policy(path: Path | str | None = None) -> Policy:
    """Load and validate a policy; ``None`` loads the one shipped in the package."""
    if path is None:
        text = resources.files("app.domain").joinpath(DEFAULT_POLICY).read_text("utf-8")
        source = f"<packaged {DEFAULT_POLICY}>"
    else:
        p = Path(path)
        try:
            text = p.read_text("utf-8")
        except OSError as exc:
            raise PolicyError(str(p), [("$", f"cannot read file: {exc.strerror or exc}")]) from exc
        source = str(p)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(source, [("$", f"not valid YAML: {exc}")]) from exc
    return policy_from_dict(doc, source)
