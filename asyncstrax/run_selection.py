"""Finding runs in storage: run documents, tags and patterns (behind ``Context.scan_runs``,
``select_runs``, ``list_available``, ``available_for_run``).

A run document is what a store knows about a run. For a ``FileStore`` (strax's
``DataDirectory``) it is the JSON file ``<path>/<run_id>-metadata.json`` (written by
``write_run_metadata``, or by strax); with ``deep_scan=True`` a run that only has data folders
(``<run_id>-<data_type>-<hash>``) is reported too, with just its name, as in strax.

Times in run documents may be written as strax does (bson's ``{"$date": milliseconds}``), as
ISO-8601 strings, as ``datetime`` objects or as integer nanoseconds since the epoch; ``start``
and ``end`` are turned into naive UTC ``datetime`` objects, as strax's readers give them.
"""

from __future__ import annotations

import datetime
import fnmatch
import glob
import os
import re
from collections.abc import Iterator
from typing import Any

from .errors import InvalidConfiguration

__all__ = [
    "RUN_METADATA_SUFFIX",
    "flatten_run_metadata",
    "run_docs",
    "tag_match",
    "tags_match",
    "to_datetime",
    "to_ns",
]

RUN_METADATA_SUFFIX = "-metadata.json"
_TIME_KEYS = ("start", "end")


def to_datetime(value: Any) -> Any:
    """A naive UTC datetime from the ways run documents write times (others unchanged)."""
    if isinstance(value, dict) and set(value) == {"$date"}:
        value = value["$date"]
        if isinstance(value, dict) and "$numberLong" in value:
            value = int(value["$numberLong"])
        if isinstance(value, (int, float)):
            return datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=value)
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def to_ns(value: Any) -> int:
    """Nanoseconds since the epoch of a run-document time (datetime, ISO string or ns)."""
    value = to_datetime(value)
    if isinstance(value, datetime.datetime):
        seconds = value.replace(tzinfo=datetime.timezone.utc).timestamp()
        return int(seconds) * 1_000_000_000
    if isinstance(value, (int, float)):
        return int(value)
    raise InvalidConfiguration(f"cannot read {value!r} as a time")


def flatten_run_metadata(md: dict, separator: str = ".",
                         keep: tuple[str, ...] = ("strax_defaults", "sub_run_spec", "tags")
                         ) -> dict:
    """strax's flattening of nested run documents: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and prefix not in keep and value and set(value) != {"$date"}:
            for key, sub in value.items():
                walk(f"{prefix}{separator}{key}" if prefix else str(key), sub)
        else:
            out[prefix] = value

    for key, value in md.items():
        if key in keep:
            out[key] = value
        else:
            walk(str(key), value)
    for key in _TIME_KEYS:
        if key in out:
            out[key] = to_datetime(out[key])
    return out


def _store_run_ids_with_metadata(path: str) -> list[str]:
    names = []
    for md_path in sorted(glob.glob(os.path.join(glob.escape(path), "*" + RUN_METADATA_SUFFIX))):
        if not os.path.isfile(md_path):
            continue
        base = os.path.basename(md_path)[: -len(RUN_METADATA_SUFFIX)]
        if "-" in base:  # data folders' metadata live in subfolders; be safe anyway
            continue
        names.append(base)
    return names


def run_docs(store: Any, store_fields: tuple[str, ...] | None = None) -> Iterator[dict]:
    """Run documents of one store (strax's ``StorageFrontend._scan_runs``)."""
    scan = getattr(store, "_scan_runs", None)
    if scan is not None:
        yield from scan(store_fields=store_fields)
        return
    path = getattr(store, "path", None)
    if path is None or not os.path.isdir(path):
        return
    found = set()
    for run_id in _store_run_ids_with_metadata(path):
        found.add(run_id)
        try:
            doc = store.run_metadata(run_id)
        except Exception:  # noqa: BLE001 - an unreadable document does not hide the others
            doc = {"name": run_id}
        doc = flatten_run_metadata(dict(doc))
        if doc.get("chunks") == []:  # written by FileStore.write_run_metadata for its reader
            del doc["chunks"]
        doc.setdefault("name", run_id)
        if store_fields:
            wanted = set(store_fields) | {"name"}
            doc = {k: v for k, v in doc.items() if k in wanted}
        yield doc
    if getattr(store, "deep_scan", False):
        from .storage.listing import list_stored

        for row in list_stored(path):
            if row["temporary"] or row["run_id"] in found:
                continue
            found.add(row["run_id"])
            yield {"name": row["run_id"]}


def tag_match(tag: str, pattern: str, pattern_type: str = "fnmatch",
              ignore_underscore: bool = True) -> bool:
    """Whether one tag matches ``pattern``, a shell pattern (``"fnmatch"``) or a regular
    expression matched at the start of the tag (``"re"``). With ``ignore_underscore``, a tag's
    leading underscore is ignored unless the pattern starts with one."""
    if ignore_underscore and tag.startswith("_") and not pattern.startswith("_"):
        tag = tag[1:]
    if pattern_type == "fnmatch":
        return fnmatch.fnmatch(tag, pattern)
    if pattern_type == "re":
        return bool(re.match(pattern, tag))
    raise InvalidConfiguration(f"pattern_type must be 'fnmatch' or 're', got {pattern_type!r}")


def tags_match(tags_column: Any, patterns: Any, pattern_type: str,
               ignore_underscore: bool) -> list[bool]:
    """Per run: whether any of its comma-separated tags matches any pattern."""
    if isinstance(patterns, str):
        patterns = [patterns]
    result = []
    for tags in tags_column:
        tag_list = [t for t in str(tags or "").split(",")]
        result.append(any(tag_match(t, p, pattern_type, ignore_underscore)
                          for t in tag_list for p in patterns))
    return result


def run_number(name: str) -> Any:
    """strax's ``number`` column: the run name as an integer when it is one, else None."""
    try:
        return int(name)
    except (TypeError, ValueError):
        return None
