"""Derived features: small arithmetic expressions over features, compiled once.

A policy may name its own features (``derived:``) as expressions such as
``spend_365d / attributes.wallet_size`` or ``margin_365d - 12 * interactions_365d``.
Allowed: numbers, feature names (``attributes.<name>`` too), ``+ - * /``, unary minus,
parentheses and the functions ``min``, ``max``, ``abs``. Nothing else parses: no
attribute access beyond ``attributes.<name>``, no calls of other functions, no
comparisons, so a policy file cannot run code.

Undefined arithmetic gives ``None`` (no value) instead of raising: a division by zero, a
missing feature or a non-numeric attribute. A condition on a ``None`` feature never holds.

>>> e = compile_expr("spend_365d / max(purchases_365d, 1)")
>>> e.names
('purchases_365d', 'spend_365d')
>>> e.fn({"spend_365d": 300.0, "purchases_365d": 3.0})
100.0
>>> e.fn({"spend_365d": 300.0}) is None
True
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Number = float | None
Fn = Callable[[Mapping[str, Any]], Number]

_FUNCS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}


class ExprError(ValueError):
    """An expression that does not parse or uses something not allowed."""


@dataclass(frozen=True, slots=True)
class Expr:
    source: str
    names: tuple[str, ...]
    fn: Fn


def compile_expr(source: str) -> Expr:
    """Parse and compile ``source``; :class:`ExprError` says what is wrong."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"not an arithmetic expression: {exc.msg}") from None
    names: set[str] = set()
    fn = _compile(tree.body, names)
    return Expr(source, tuple(sorted(names)), fn)


def _num(v: Any) -> Number:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _finite(v: float) -> Number:
    return v if not math.isnan(v) else None


def _compile(node: ast.expr, names: set[str]) -> Fn:
    if isinstance(node, ast.Constant):
        value = _num(node.value)
        if value is None:
            raise ExprError(f"only numbers may appear as constants, got {node.value!r}")
        return lambda f: value
    name = _name_of(node)
    if name is not None:
        names.add(name)
        return lambda f: _num(f.get(name))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _compile(node.operand, names)
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0

        def unary(f: Mapping[str, Any]) -> Number:
            v = inner(f)
            return None if v is None else sign * v

        return unary
    if isinstance(node, ast.BinOp):
        return _binop(node, names)
    if isinstance(node, ast.Call):
        return _call(node, names)
    raise ExprError(f"not allowed in an expression: {ast.unparse(node)!r}")


def _name_of(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "attributes"
    ):
        return f"attributes.{node.attr}"
    return None


def _binop(node: ast.BinOp, names: set[str]) -> Fn:
    left, right = _compile(node.left, names), _compile(node.right, names)
    op = node.op
    if isinstance(op, ast.Add):
        combine: Callable[[float, float], Number] = lambda a, b: _finite(a + b)  # noqa: E731
    elif isinstance(op, ast.Sub):
        combine = lambda a, b: _finite(a - b)  # noqa: E731
    elif isinstance(op, ast.Mult):
        combine = lambda a, b: _finite(a * b)  # noqa: E731
    elif isinstance(op, ast.Div):
        combine = lambda a, b: _finite(a / b) if b else None  # noqa: E731
    else:
        raise ExprError(f"operator not allowed (use + - * /): {ast.unparse(node)!r}")

    def binop(f: Mapping[str, Any]) -> Number:
        a = left(f)
        if a is None:
            return None
        b = right(f)
        return None if b is None else combine(a, b)

    return binop


def _call(node: ast.Call, names: set[str]) -> Fn:
    func = node.func.id if isinstance(node.func, ast.Name) else None
    if func not in _FUNCS or node.keywords:
        raise ExprError(
            f"only min(...), max(...) and abs(...) may be called: {ast.unparse(node)!r}"
        )
    if (func == "abs" and len(node.args) != 1) or (func != "abs" and len(node.args) < 2):
        raise ExprError(f"wrong number of arguments: {ast.unparse(node)!r}")
    impl = _FUNCS[func]
    args = [_compile(a, names) for a in node.args]

    def call(f: Mapping[str, Any]) -> Number:
        values = [a(f) for a in args]
        if any(v is None for v in values):
            return None
        return float(impl(*values))

    return call
