"""Request arguments that shape what a request returns: ``selection``, ``keep_columns``,
``drop_columns`` (strax's), and the ``run_id`` field of multi-run results.

``selection`` is what strax accepts: a query string (``"area > 100"``), a list of them (all must
hold), or a function of the array returning a boolean mask. strax evaluates strings with numexpr;
here a small evaluator walks the expression's syntax tree and applies numpy to whole fields, so
there is no extra dependency and nothing but field names, numbers and the operators below can
run (no attribute access, no imports, no arbitrary calls):

- comparisons ``< <= > >= == !=`` (chained too: ``0 < x < 10``);
- ``&``, ``|``, ``^``, ``~``: as numexpr, logical on booleans and bitwise on integers
  (``(flags & 4) != 0``); ``and``, ``or``, ``not`` are elementwise logical here;
- arithmetic ``+ - * / // % **`` and unary minus;
- the functions ``abs sqrt exp log log10 log1p sin cos tan arcsin arccos arctan arctan2 sinh
  cosh tanh where isnan isfinite minimum maximum``;
- ``True``, ``False``, numbers and strings (for string or bytes fields).

A name that is not a field raises ``InvalidConfiguration`` listing the fields.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import InvalidConfiguration

__all__ = ["add_run_id_field", "apply_request_selection", "apply_selection", "evaluate_selection"]

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
#: numexpr's meaning: logical on booleans, bitwise on integers
_BITWISE: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.BitAnd: ("&", np.bitwise_and),
    ast.BitOr: ("|", np.bitwise_or),
    ast.BitXor: ("^", np.bitwise_xor),
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: getattr(np, name)
    for name in (
        "abs sqrt exp log log10 log1p sin cos tan arcsin arccos arctan arctan2 sinh cosh tanh "
        "where isnan isfinite minimum maximum"
    ).split()
}


class _Evaluator:
    def __init__(self, fields: dict[str, np.ndarray], text: str) -> None:
        self.fields = fields
        self.text = text

    def fail(self, why: str) -> InvalidConfiguration:
        return InvalidConfiguration(f"cannot evaluate selection {self.text!r}: {why}")

    def check_bitwise_operand(self, symbol: str, value: Any) -> None:
        kind = np.asarray(value).dtype.kind
        if kind not in "biu":
            raise self.fail(f"{symbol} needs booleans or integers, not {np.asarray(value).dtype}")

    def __call__(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self(node.body)
        if isinstance(node, ast.Name):
            if node.id in self.fields:
                return self.fields[node.id]
            if node.id in ("True", "False"):  # pragma: no cover - parsed as Constant
                return node.id == "True"
            raise self.fail(f"{node.id!r} is not a field; fields are {sorted(self.fields)}")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (bool, int, float, str, bytes)):
                return node.value
            raise self.fail(f"constant {node.value!r} is not allowed")
        if isinstance(node, ast.Compare):
            if len(node.ops) > 1 and any(_is_bitwise(n) for n in (node.left, *node.comparators)):
                raise self.fail(
                    "& | ^ bind tighter than comparisons, so this reads as a chained comparison "
                    "of a bitwise result; put each comparison in parentheses, "
                    "e.g. (area > 100) & (channel == 1)"
                )
            left = self(node.left)
            result: Any = None
            for op, right_node in zip(node.ops, node.comparators):
                if type(op) not in _COMPARE:
                    raise self.fail(f"operator {type(op).__name__} is not allowed")
                right = self(right_node)
                part = _COMPARE[type(op)](left, right)
                result = part if result is None else np.logical_and(result, part)
                left = right
            return result
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            values = [self(v) for v in node.values]
            result = values[0]
            for value in values[1:]:
                result = combine(result, value)
            return result
        if isinstance(node, ast.BinOp) and type(node.op) in _BITWISE:
            symbol, function = _BITWISE[type(node.op)]
            left, right = self(node.left), self(node.right)
            self.check_bitwise_operand(symbol, left)
            self.check_bitwise_operand(symbol, right)
            return function(left, right)
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise self.fail(f"operator {type(node.op).__name__} is not allowed")
            return _BINARY[type(node.op)](self(node.left), self(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = self(node.operand)
            if isinstance(node.op, ast.Not):
                return np.logical_not(operand)
            if isinstance(node.op, ast.Invert):
                self.check_bitwise_operand("~", operand)
                return np.invert(operand)
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return +operand
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
                name = getattr(node.func, "id", ast.unparse(node.func))
                raise self.fail(f"function {name!r} is not allowed; use one of "
                                f"{sorted(_FUNCTIONS)}")
            if node.keywords:
                raise self.fail("keyword arguments are not allowed")
            return _FUNCTIONS[node.func.id](*[self(a) for a in node.args])
        raise self.fail(f"{type(node).__name__} is not allowed in a selection")


def _is_bitwise(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and type(node.op) in _BITWISE


def evaluate_selection(data: np.ndarray, selection: str | Sequence[str]) -> np.ndarray:
    """The boolean mask of a query string (or of all of a list of them) over ``data``."""
    if isinstance(selection, (list, tuple)):
        text = " & ".join(f"({s})" for s in selection)
    else:
        text = str(selection)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise InvalidConfiguration(
            f"selection {text!r} is not an expression: {error.msg}"
        ) from None
    fields = {name: data[name] for name in data.dtype.names or ()}
    mask = _Evaluator(fields, text)(tree)
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise InvalidConfiguration(f"selection {text!r} does not give booleans (got {mask.dtype})")
    if mask.ndim == 0:
        mask = np.full(len(data), bool(mask))
    return mask


def _field_names(data: np.ndarray) -> tuple[str, ...]:
    return tuple(data.dtype.names or ())


def apply_request_selection(
    data: np.ndarray,
    selection: Any = None,
    keep_columns: str | Sequence[str] | None = None,
    drop_columns: str | Sequence[str] | None = None,
) -> np.ndarray:
    """``data`` with strax's ``selection``, ``keep_columns`` and ``drop_columns`` applied.

    Items are selected first, then fields. Kept fields keep their titles (comments) and the
    order of the dtype. Giving both ``keep_columns`` and ``drop_columns`` is an error, as in
    strax; so is keeping a field that does not exist (dropping one is not, as in strax).
    """
    if keep_columns and drop_columns:
        raise InvalidConfiguration(
            "give keep_columns or drop_columns, not both: their logic contradicts"
        )
    if selection is not None and not (isinstance(selection, (str, list, tuple)) and not selection):
        # an empty string or list selects nothing out, as strax's ``if selection:``
        if callable(selection):
            mask = np.asarray(selection(data), dtype=bool)
        else:
            mask = evaluate_selection(data, selection)
        if mask.shape != (len(data),):
            raise InvalidConfiguration(
                f"selection gave a mask of shape {mask.shape} for {len(data)} items"
            )
        if not mask.all():
            data = data[mask]
    names = _field_names(data)
    if keep_columns:
        keep = (keep_columns,) if isinstance(keep_columns, str) else tuple(keep_columns)
        unknown = sorted(set(keep) - set(names))
        if unknown:
            raise InvalidConfiguration(f"keep_columns names {unknown}, which are not fields of "
                                       f"the data; fields are {list(names)}")
        keep_set = set(keep)
    elif drop_columns:
        drop = (drop_columns,) if isinstance(drop_columns, str) else tuple(drop_columns)
        keep_set = set(names) - set(drop)
    else:
        return data
    if keep_set == set(names):
        return data
    fields: Any = data.dtype.fields
    new_dtype = np.dtype(
        [
            (((fields[n][2], n) if len(fields[n]) > 2 else n), fields[n][0])
            for n in names
            if n in keep_set
        ]
    )
    out = np.empty(len(data), dtype=new_dtype)
    for name in new_dtype.names or ():
        out[name] = data[name]
    return out


def apply_selection(
    x: np.ndarray,
    selection: Any = None,
    keep_columns: str | Sequence[str] | None = None,
    drop_columns: str | Sequence[str] | None = None,
    time_range: tuple[int, int] | None = None,
    time_selection: str = "fully_contained",
) -> np.ndarray:
    """strax's ``apply_selection``: time range first (on any array, sorted or not), then
    ``apply_request_selection``."""
    from .chunk import endtime
    from .selection import check_time_selection

    check_time_selection(time_selection)
    if time_range is not None and time_selection != "skip":
        t0, t1 = int(time_range[0]), int(time_range[1])
        if time_selection == "fully_contained":
            x = x[(x["time"] >= t0) & (endtime(x) <= t1)]
        else:
            x = x[(endtime(x) > t0) & (x["time"] < t1)]
    return apply_request_selection(x, selection, keep_columns, drop_columns)


def add_run_id_field(arr: np.ndarray, run_id: str, dtype: Any = None) -> np.ndarray:
    """A copy of ``arr`` with a first field ``run_id`` (strax's multi-run results).

    ``dtype`` is the field's type: by default a unicode string as long as ``run_id``; give a
    common width (``"U10"``) when several runs are joined, or bytes (``"S10"``) to save memory as
    strax's ``run_id_as_bytes`` does.
    """
    run_id = str(run_id)
    if dtype is None:
        dtype = f"U{max(1, len(run_id))}"
    names = _field_names(arr)
    if "run_id" in names:
        raise InvalidConfiguration("the data already has a 'run_id' field")
    new_dtype = np.dtype([("run_id", dtype), *_descr_with_titles(arr.dtype)])
    out = np.empty(len(arr), dtype=new_dtype)
    out["run_id"] = run_id.encode() if np.dtype(dtype).kind == "S" else run_id
    for name in names:
        out[name] = arr[name]
    return out


def _descr_with_titles(dtype: np.dtype) -> list[tuple[Any, Any]]:
    fields: Any = dtype.fields or {}
    return [
        (((fields[n][2], n) if len(fields[n]) > 2 else n), fields[n][0])
        for n in dtype.names or ()
    ]
