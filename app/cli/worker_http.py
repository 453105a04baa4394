"""Asking running workers over HTTP (their views, :mod:`agents` / :mod:`app.stream.web`): the
client that ``tierstream explain`` and ``tierstream policy diff --worker`` share. Plain
``urllib``: no HTTP client dependency."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from app.settings import Settings


#: Seconds to wait for an explain, and for one worker's policy diff (it decides every
#: customer of the worker's partitions).
EXPLAIN_TIMEOUT_S = 15.0
DIFF_TIMEOUT_S = 600.0


def default_url(settings: Settings) -> str:
    """The worker URL the settings describe (a wildcard bind address means this host)."""
    host = settings.web_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}"


class NoAnswer(Exception):
    """Nobody answers at a URL (refused, unreachable, timed out)."""


def request(
    method: str, url: str, body: bytes | None = None, timeout: float = EXPLAIN_TIMEOUT_S
) -> tuple[int, Any]:
    """``(status, JSON body)``; raises :class:`NoAnswer` when nothing answers, and
    ValueError when the answer is not JSON (not a tierstream worker)."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/yaml"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise NoAnswer(f"no worker answers at {url}: {exc.reason}") from None
    except (OSError, TimeoutError) as exc:
        raise NoAnswer(f"no worker answers at {url}: {exc}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        raise ValueError(
            f"{url} answered {status} with something that is not JSON: not a tierstream worker?"
        ) from None


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def error_of(doc: Any) -> str:
    return str(doc.get("error", doc)) if isinstance(doc, Mapping) else str(doc)


# --- tierstream explain ------------------------------------------------------------------
