"""Plugin options, declared as strax declares them.

Two spellings, one object:

- ``@takes_config(Option("gain", default=1.0, type=float, help="..."))`` on the class;
- ``gain = Config(default=1.0, type=float, help="...")`` as a class attribute (the name is the
  attribute's name).

Either way the plugin reads ``self.config["gain"]`` or ``self.gain``. Values are checked when a
plugin is configured: a required option with no value, or a value of the wrong type, raises
``InvalidConfiguration`` naming the plugin and the option.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import InvalidConfiguration

__all__ = ["OMITTED", "Config", "Option", "takes_config"]


class _Omitted:
    """Marks an option argument that was not given (``None`` is a valid default)."""

    _instance: _Omitted | None = None

    def __new__(cls) -> _Omitted:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<OMITTED>"

    def __reduce__(self) -> str:
        return "OMITTED"


OMITTED: Any = _Omitted()


class Option:
    """One configuration option of a plugin.

    ``type`` may be a type or a tuple of types; with ``infer_type=True`` it is taken from the
    default. ``track=False`` keeps the option out of the lineage (for options that cannot change
    results, like a buffer size). ``default_by_run`` gives ``[(first_run_id, value), ...]``.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        type: Any = OMITTED,
        default: Any = OMITTED,
        default_factory: Callable[[], Any] | Any = OMITTED,
        default_by_run: Any = OMITTED,
        child_option: bool = False,
        parent_option_name: str | None = None,
        track: bool = True,
        infer_type: bool = False,
        help: str = "",
    ) -> None:
        self.name = name
        self.type = type
        self.default = default
        self.default_factory = default_factory
        self.default_by_run = default_by_run
        self.child_option = child_option
        self.parent_option_name = parent_option_name
        self.track = track
        self.help = help
        given = [x for x in (default, default_factory, default_by_run) if x is not OMITTED]
        if len(given) > 1:
            raise InvalidConfiguration(
                f"option {name!r}: give only one of default, default_factory, default_by_run"
            )
        if bool(child_option) != bool(parent_option_name):
            raise InvalidConfiguration(
                f"option {name!r}: a child option needs both child_option=True and "
                f"parent_option_name (the parent's option it overrides); an option only the "
                f"child has is not a child option"
            )
        if default_by_run is not OMITTED and callable(default_by_run):
            raise InvalidConfiguration(
                f"option {name!r}: default_by_run must be a list of (first_run, value) pairs; "
                f"functions are not supported (as in strax)"
            )
        if infer_type and type is OMITTED and default not in (OMITTED, None):
            self.type = builtin_type(default)

    # ------------------------------------------------------------------ descriptor protocol
    def __set_name__(self, owner: type, name: str) -> None:
        if self.name is None:
            self.name = name
        elif self.name != name:
            raise InvalidConfiguration(
                f"option declared as attribute {name!r} of {owner.__name__} but named "
                f"{self.name!r}; use the same name"
            )

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        try:
            return instance.config[self.name]
        except (AttributeError, KeyError):
            raise AttributeError(
                f"option {self.name!r} of {type(instance).__name__} is read before the plugin "
                f"was configured"
            ) from None

    # ------------------------------------------------------------------ values
    @property
    def has_default(self) -> bool:
        """Whether the option has a default (plain, factory or per run); if not, it must be
        set."""
        return any(
            x is not OMITTED for x in (self.default, self.default_factory, self.default_by_run)
        )

    def get_default(self, run_id: str | None = None) -> Any:
        """The default value, for ``run_id`` when the default depends on the run."""
        if self.default is not OMITTED:
            return copy.deepcopy(self.default)
        if self.default_factory is not OMITTED:
            return self.default_factory()
        if self.default_by_run is not OMITTED:
            return _value_by_run(self.default_by_run, run_id, self.name)
        raise InvalidConfiguration(f"option {self.name!r} has no default and must be set")

    def validate(self, config: dict, plugin_name: str = "", run_id: str | None = None) -> None:
        """Fill in the default if unset, then check the value's type (in place)."""
        if self.name not in config:
            if not self.has_default:
                raise InvalidConfiguration(
                    f"option {self.name!r} is required (it has no default) but is not set",
                    plugin=plugin_name or None,
                )
            config[self.name] = self.get_default(run_id)
        value = config[self.name]
        if self.type is not OMITTED and value is not None and not _is_instance(value, self.type):
            raise InvalidConfiguration(
                f"option {self.name!r} must be of type {_type_name(self.type)}, "
                f"got {value!r} of type {type(value).__name__}",
                plugin=plugin_name or None,
            )

    def __repr__(self) -> str:
        return f"Option({self.name!r}, default={self.default!r})"


class Config(Option):
    """An option declared as a class attribute: ``gain = Config(default=1.0, help=...)``."""


def takes_config(*options: Option) -> Callable[[type], type]:
    """Class decorator adding options to a plugin, strax's older spelling."""

    def decorate(plugin_class: type) -> type:
        merged = dict(getattr(plugin_class, "takes_config", {}))
        for option in options:
            if not isinstance(option, Option):
                raise InvalidConfiguration(
                    f"takes_config of {plugin_class.__name__} got {option!r}, not an Option"
                )
            if option.name is None:
                raise InvalidConfiguration(
                    f"an option of {plugin_class.__name__} given to takes_config has no name"
                )
            merged[option.name] = option
            if not hasattr(plugin_class, option.name) or isinstance(
                getattr(plugin_class, option.name, None), Option
            ):
                setattr(plugin_class, option.name, option)
        plugin_class.takes_config = merged  # type: ignore[attr-defined]
        return plugin_class

    return decorate


def builtin_type(value: Any) -> Any:
    """The type to check against for a default value (any real number for a number, numpy
    scalars included, as strax's ``numbers.Number``)."""
    if isinstance(value, (bool, np.bool_)):
        return bool
    if isinstance(value, numbers.Real):
        return numbers.Real
    if isinstance(value, (list, tuple)):
        return (list, tuple)
    return type(value)


def _is_instance(value: Any, expected: Any) -> bool:
    """isinstance, lenient where strax notebooks rely on strax only warning: numpy scalars
    pass for int/float, ints for floats, lists for tuples and tuples for lists (JSON)."""
    for t in expected if isinstance(expected, tuple) else (expected,):
        if t is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
            return True
        if t is int and isinstance(value, numbers.Integral):
            return True
        if t in (tuple, list) and isinstance(value, (tuple, list)):
            return True
        try:
            if isinstance(value, t):
                return True
        except TypeError:
            return True  # typing constructs: not checked
    return False


def _type_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return getattr(expected, "__name__", repr(expected))


def _run_order(run_id: Any) -> Any:
    """Run ids compare as numbers where they are numbers (strax: int(run_id without '_'))."""
    text = str(run_id).replace("_", "")
    return (0, int(text), "") if text.isdigit() else (1, 0, str(run_id))


def _value_by_run(pairs: Any, run_id: str | None, name: str | None) -> Any:
    """strax's default_by_run: the value of the last pair whose first run is <= run_id.

    Run ids compare numerically when both are numbers ("001500" is after 1000); a superrun
    (leading ``_``) gets strax's ``"<SUBRUN-DEPENDENT:hash>"`` placeholder; a run before the
    first pair's is an error, as in strax.
    """
    if not isinstance(pairs, (list, tuple)):
        return pairs
    if run_id is None:
        return copy.deepcopy(pairs[-1][1])
    if str(run_id).startswith("_"):
        from .lineage import deterministic_hash

        return f"<SUBRUN-DEPENDENT:{deterministic_hash(pairs)}>"
    key = _run_order(run_id)
    chosen: Any = OMITTED
    for first_run, value in pairs:
        if _run_order(first_run) > key:
            break
        chosen = value
    if chosen is OMITTED:
        raise InvalidConfiguration(
            f"option {name!r} has no per-run default for run {run_id!r}: the first run with "
            f"a default is {pairs[0][0]!r}"
        )
    return copy.deepcopy(chosen)
