"""The plugin graph: who provides what, and configured plugin instances for one request.

``PluginRegistry`` maps data types to plugin classes, with strax's rules at registration.
``build_plugins`` makes one configured instance per plugin class needed for a run's targets
(dependencies first, cycles and missing providers reported with the path that leads to them),
checks every option, infers dtypes and data kinds, and attaches each plugin's lineage.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import InvalidConfiguration, RegistrationError
from .plugins.base import Plugin

__all__ = ["PluginRegistry", "build_plugins"]


class PluginRegistry:
    """Data type -> plugin class, with strax's rules for replacing a provider."""

    def __init__(self) -> None:
        self.by_data_type: dict[str, type[Plugin]] = {}

    def register(self, plugin_class: type[Plugin]) -> None:
        """Make ``plugin_class`` the provider of its data types, as strax does: a plugin it
        displaces from one data type is dropped from all of them (a multi-output plugin
        provides all its data types or none), with a warning. Refused, leaving the registry as
        it was, if an option of the new plugin has another default in a plugin that stays."""
        if not (isinstance(plugin_class, type) and issubclass(plugin_class, Plugin)):
            raise RegistrationError(f"can only register Plugin subclasses, got {plugin_class!r}")
        provides = plugin_class().provides
        after = dict(self.by_data_type)
        displaced: list[type[Plugin]] = []
        for dt in provides:
            old = after.get(dt)
            if old is not None and old is not plugin_class and old not in displaced:
                displaced.append(old)
            after[dt] = plugin_class
        dropped = {}
        for old in displaced:
            rest = [dt for dt, cls in after.items() if cls is old]
            for dt in rest:
                del after[dt]
            if rest:
                dropped[old] = rest
        _check_option_defaults(plugin_class, after.values())
        self.by_data_type.clear()
        self.by_data_type.update(after)
        for old, rest in dropped.items():
            taken = [dt for dt in provides if dt in old().provides]
            warnings.warn(
                f"{plugin_class.__name__} takes over {taken} from {old.__name__}, so "
                f"{old.__name__} no longer provides {rest} either: register a plugin for "
                f"{rest} if you need them", stacklevel=3)

    def provider(self, data_type: str, needed_by: str | None = None) -> type[Plugin]:
        try:
            return self.by_data_type[data_type]
        except KeyError:
            via = f" (needed by {needed_by})" if needed_by else ""
            raise RegistrationError(
                f"no plugin provides {data_type!r}{via}; registered data types: "
                f"{sorted(self.by_data_type)}",
                data_type=data_type,
            ) from None

    def options(self) -> dict[str, list[type[Plugin]]]:
        """Option name -> the registered plugin classes that take it."""
        taken: dict[str, list[type[Plugin]]] = {}
        for cls in set(self.by_data_type.values()):
            for name in cls.takes_config:
                taken.setdefault(name, []).append(cls)
        return taken


def _check_option_defaults(new: type[Plugin], registered: Iterable[type[Plugin]]) -> None:
    """strax's rule: an option name has one default in every registered plugin that takes
    it, or one context option would set different things in different plugins."""
    for cls in dict.fromkeys(registered):  # in registration order: the first conflict named
        if cls is new:
            continue
        for name, option in new.takes_config.items():
            other = cls.takes_config.get(name)
            if other is None:
                continue
            try:
                theirs, ours = other.get_default("0"), option.get_default("0")
            except InvalidConfiguration:  # no default (required), as strax skips it
                continue
            if not _same_value(theirs, ours):
                raise RegistrationError(
                    f"option {name!r} has the default {theirs!r} in {cls.__name__} but "
                    f"{ours!r} in {new.__name__}: one option name must have one default, so "
                    f"change one of them (or rename the option)")


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # arrays: elementwise
        return bool(np.array_equal(a, b))


def build_plugins(
    registry: PluginRegistry,
    run_id: str,
    targets: Iterable[str],
    config: Mapping[str, Any],
) -> dict[str, Plugin]:
    """Configured plugins for ``targets`` and everything they depend on, by data type."""
    built: dict[str, Plugin] = {}
    by_class: dict[type, Plugin] = {}

    def build(data_type: str, path: tuple[str, ...]) -> Plugin:
        if data_type in built:
            return built[data_type]
        if data_type in path:
            cycle = " -> ".join((*path[path.index(data_type):], data_type))
            raise RegistrationError(f"dependency cycle: {cycle}", data_type=data_type)
        cls = registry.provider(data_type, needed_by=path[-1] if path else None)
        plugin = by_class.get(cls)
        if plugin is None:
            plugin = cls()
            plugin.run_id = run_id
            plugin.config = _plugin_config(plugin, config, run_id)
            for dep in plugin.depends_on:
                plugin.deps[dep] = build(dep, (*path, data_type))
            plugin._fix_declarations()
            plugin.lineage = _lineage(plugin)  # type: ignore[attr-defined]
            by_class[cls] = plugin
        for dt in plugin.provides:
            built[dt] = plugin
        return plugin

    for target in targets:
        build(target, ())
    return built


def _plugin_config(plugin: Plugin, config: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    values = {name: config[name] for name in plugin.takes_config if name in config}
    for option in plugin.takes_config.values():
        option.validate(values, plugin_name=plugin.name, run_id=run_id)
    if plugin.child_plugin:
        # strax's child plugins: a child option's value replaces its parent option's, so the
        # parent's code (self.config["parent_name"], self.parent_name) sees the child's value.
        for name, option in plugin.takes_config.items():
            if not option.child_option:
                continue
            parent = option.parent_option_name
            if parent not in plugin.takes_config:
                raise InvalidConfiguration(
                    f"child option {name!r} of {plugin.name} overrides {parent!r}, which is not "
                    f"an option of its parent; check parent_option_name",
                    plugin=plugin.name,
                )
            values[parent] = values[name]
    return values


def _lineage(plugin: Plugin) -> dict[str, Any]:
    """strax's lineage: this plugin's entry plus its dependencies' lineages.

    For a child plugin (``child_plugin = True``), as strax: the parent options that child
    options override are left out, and each parent plugin class adds ``{name: version}``.
    """
    overridden = set()
    if plugin.child_plugin:
        overridden = {
            o.parent_option_name for o in plugin.takes_config.values() if o.child_option
        }
    tracked = {
        name: value
        for name, value in plugin.config.items()
        if plugin.takes_config[name].track and name not in overridden
    }
    if plugin.child_plugin:
        for base in type(plugin).__bases__:
            if isinstance(base, type) and issubclass(base, Plugin) and base is not Plugin:
                tracked[base.__name__] = str(base.__version__)
    lineage = {plugin.provides[-1]: (plugin.name, plugin.version(plugin.run_id), tracked)}
    for dep in plugin.deps.values():
        lineage.update(dep.lineage)  # type: ignore[attr-defined]
    return lineage


def check_config_names(registry: PluginRegistry, names: Iterable[str]) -> None:
    """Raise on option names no registered plugin takes (a typo would otherwise be ignored)."""
    taken = registry.options()
    unknown = sorted(set(names) - set(taken))
    if unknown:
        import difflib

        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(taken), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InvalidConfiguration(
            f"no registered plugin takes the option(s) {', '.join(hints)}"
        )
