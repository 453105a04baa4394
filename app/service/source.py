"""What a file reader hands the services: one record of an input file, parsed or not.

The readers live in :mod:`app.adapters.files`; ``classify``, ``fit``, ``policy diff
--events`` and ``produce`` take their lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SourceLine:
    """One record of an input file: ``doc`` when it parsed, else ``reason``/``detail``.

    ``line`` is the 1-based line number in the file (for a JSON array: the element
    number); ``raw`` is the original text, kept for error reports.
    """

    line: int
    raw: str
    doc: dict[str, Any] | None = None
    reason: str | None = None
    detail: str | None = None
