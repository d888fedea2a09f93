"""``ContextSpec``: the picklable description of a Context that Dask workers rebuild it from.

Plugin classes travel by import path (``module:Class``), storage as folder paths and store
arguments, configuration as option values.
"""

from __future__ import annotations

import dataclasses
import importlib
import numbers
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

from ..context import Context
from ..errors import InvalidConfiguration
from ..plugins.base import Plugin

__all__ = ["ContextSpec"]


def _import_path(obj: Any, what: str) -> str:
    """``module:QualName`` of a class, checked to import back to the very same object."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    hint = (
        "Dask workers import plugins by module path: define it at the top level of a module "
        "they can import (a .py file on their PYTHONPATH, or installed)"
    )
    if not module or module == "__main__" or "<locals>" in qualname:
        where = "in __main__ (a script or notebook)" if module == "__main__" else (
            "inside a function" if "<locals>" in qualname else "in no module")
        raise InvalidConfiguration(f"{what} {obj!r} is defined {where}; {hint}")
    path = f"{module}:{qualname}"
    try:
        found = _import_object(path)
    except (ImportError, AttributeError) as error:
        raise InvalidConfiguration(f"{what} {obj!r} cannot be imported as {path!r} ({error}); "
                                   f"{hint}") from None
    if found is not obj:
        raise InvalidConfiguration(
            f"{what} {obj!r}: {path!r} imports a different object (was the class redefined or "
            f"replaced after import?); {hint}")
    return path


def _import_object(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:  # an ImportError: reported like a missing module
            raise ImportError(f"{module_name!r} has no {qualname!r}") from None
    return obj


def _store_description(store: Any) -> dict[str, Any]:
    from ..storage.files import FileStore

    if isinstance(store, FileStore):
        return dict(path=os.path.abspath(store.path), readonly=store.readonly,
                    compressor=store.compressor, read_ahead=store.read_ahead,
                    max_writes_in_flight=store.max_writes_in_flight, fsync=store.fsync)
    path = getattr(store, "path", None)
    if path is None:
        raise InvalidConfiguration(
            f"storage {store!r} cannot be described for Dask workers: only stores with a "
            f"'path' (FileStore) can be shared between processes")
    return {"class": _import_path(type(store), "storage class"),
            "path": os.path.abspath(os.fspath(path)),
            "readonly": bool(getattr(store, "readonly", False))}


def _build_store(description: Mapping[str, Any]) -> Any:
    from ..storage.files import FileStore

    description = dict(description)
    cls_path = description.pop("class", None)
    cls = FileStore if cls_path is None else _import_object(cls_path)
    return cls(**description)


@dataclasses.dataclass(frozen=True)
class ContextSpec:
    """What a worker needs to rebuild a Context: picklable, and small.

    ``plugins``: import paths ``"module:Class"``, registered in order; ``config``: option
    values; ``storage``: one dict per store (``path``, ``readonly`` and the store's other
    arguments; ``class`` as ``"module:Class"`` for stores other than ``FileStore``);
    ``context_config``: the Context's own settings (``max_workers``, ...).
    """

    plugins: tuple[str, ...]
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    storage: tuple[Mapping[str, Any], ...] = ()
    context_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_context(cls, context: Context) -> ContextSpec:
        """The description of a live Context; every plugin class must be importable by path."""
        classes = list(dict.fromkeys(context._plugin_class_registry.values()))
        spec = cls(
            plugins=tuple(_import_path(c, "plugin class") for c in classes),
            config=dict(context.config),
            storage=tuple(_store_description(s) for s in context.storage),
            context_config=dict(context.context_config),
        )
        spec.check_picklable()
        return spec

    @classmethod
    def from_plugins(
        cls,
        plugins: str | Sequence[str | type[Plugin]],
        storage: str | os.PathLike | Sequence[str | os.PathLike] = (),
        config: Mapping[str, Any] | None = None,
        **context_config: Any,
    ) -> ContextSpec:
        """A description from plugin names (as ``--plugins`` takes them) and storage paths.

        Each entry of ``plugins`` is a class, ``"module:Class"``, ``"module:A,B"``, or a module:
        its ``PLUGINS`` list, else its ``register_all(context)`` function, else its one
        ``*_PLUGINS`` list, else every Plugin class it defines.
        """
        if isinstance(plugins, str):
            plugins = [plugins]
        paths: list[str] = []
        for entry in plugins:
            if isinstance(entry, type):
                paths.append(_import_path(entry, "plugin class"))
            else:
                paths.extend(_expand_plugin_arg(entry))
        if isinstance(storage, (str, os.PathLike)):
            storage = [storage]
        return cls(
            plugins=tuple(dict.fromkeys(paths)),
            config=dict(config or {}),
            storage=tuple(dict(path=os.path.abspath(os.fspath(p)), readonly=False)
                          for p in storage),
            context_config=context_config,
        )

    def build(self, **context_config: Any) -> Context:
        """A Context as described (``context_config`` overrides the described settings)."""
        return Context(
            storage=[_build_store(s) for s in self.storage],
            register=[_import_object(p) for p in self.plugins],
            config=dict(self.config),
            **{**self.context_config, **context_config},
        )

    def check_picklable(self) -> None:
        """Refuse, naming the culprit, a description that cannot be sent to Dask workers."""
        try:
            pickle.dumps(self)
        except Exception as error:  # noqa: BLE001 - pickle raises many kinds
            bad = [k for k, v in self.config.items() if not _picklable(v)]
            raise InvalidConfiguration(
                "the context cannot be sent to Dask workers: "
                + (f"option value(s) {bad} cannot be pickled" if bad else
                   f"it cannot be pickled ({type(error).__name__}: {error})")
            ) from None


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001
        return False
    return True


def _expand_plugin_arg(text: str) -> list[str]:
    """``"module:A,B"`` -> two import paths; ``"module"`` -> the module's plugins."""
    text = text.strip()
    module_name, sep, names = text.partition(":")
    if sep:
        return [f"{module_name}:{name.strip()}" for name in names.split(",") if name.strip()]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InvalidConfiguration(f"cannot import plugin module {module_name!r}: {error}"
                                   ) from None
    classes: list[Any]
    if isinstance(getattr(module, "PLUGINS", None), (list, tuple)):
        classes = list(module.PLUGINS)
    elif callable(getattr(module, "register_all", None)):
        scratch = Context()
        module.register_all(scratch)
        classes = list(dict.fromkeys(scratch._plugin_class_registry.values()))
    else:
        lists = [v for k, v in vars(module).items()
                 if k.endswith("_PLUGINS") and isinstance(v, (list, tuple))]
        if len(lists) == 1:
            classes = list(lists[0])
        else:
            classes = [v for v in vars(module).values()
                       if isinstance(v, type) and issubclass(v, Plugin)
                       and v.__module__ == module.__name__ and v.provides]
    if not classes:
        raise InvalidConfiguration(f"module {module_name!r} has no plugins (give a PLUGINS "
                                   f"list, a register_all(context) function or Plugin classes)")
    return [_import_path(c, "plugin class") for c in classes]


def _as_spec(context: Context | ContextSpec) -> ContextSpec:
    if isinstance(context, ContextSpec):
        return context
    if isinstance(context, Context):
        return ContextSpec.from_context(context)
    raise TypeError(f"expected a Context or a ContextSpec, got {type(context).__name__}")


def _as_targets(targets: str | Sequence[str]) -> tuple[str, ...]:
    return (targets,) if isinstance(targets, str) else tuple(targets)


def _as_run_ids(run_ids: Any) -> list[str]:
    """Run ids as strings, duplicates dropped; one ``str`` (or whole number) is one run, as
    ``Context.get_df`` takes it, not a sequence of one-character runs."""
    if isinstance(run_ids, (str, numbers.Integral)):
        return [str(run_ids)]
    if isinstance(run_ids, (bytes, bytearray)):
        raise TypeError(f"run ids are strings, got bytes {run_ids!r}")
    return list(dict.fromkeys(str(r) for r in run_ids))

