"""Lineage: what a piece of data was made from, and its short, stable hash.

The lineage of a data type is ``{data_type: [plugin class name, version, {option: value}]}`` over
the data type and all its dependencies, recursively. Its hash is strax's: the first 10
characters, lowercase, of the base32 of the sha1 of the JSON dump of the lineage made hashable
(dicts become tuples of sorted items, arrays lists). Keeping strax's recipe means the same plugins
with the same versions and options find data that strax saved, and the other way round.
"""

from __future__ import annotations

import json
from base64 import b32encode
from hashlib import sha1
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DataKey", "deterministic_hash", "hashablize"]


def hashablize(obj: Any) -> Any:
    """A hashable, JSON-able copy of a container hierarchy (dicts become sorted item tuples)."""
    try:
        hash(obj)
    except TypeError:
        if isinstance(obj, dict):
            return tuple((key, hashablize(value)) for key, value in sorted(obj.items()))
        if isinstance(obj, np.ndarray):
            return tuple(obj.tolist())
        if hasattr(obj, "__iter__"):
            return tuple(hashablize(item) for item in obj)
        raise TypeError(f"cannot put an object of type {type(obj).__name__} in a lineage")
    return obj


class _NumpyJSON(json.JSONEncoder):
    """JSON for numpy scalars and arrays, which lineage values may contain."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if hasattr(obj, "__iter__"):
            return [self.default(item) for item in obj]
        return super().default(obj)


def deterministic_hash(thing: Any, length: int = 10) -> str:
    """strax's hash of a container hierarchy: stable across processes and Python versions."""
    text = json.dumps(hashablize(thing), cls=_NumpyJSON)
    return b32encode(sha1(text.encode("ascii")).digest())[:length].decode("ascii").lower()


class DataKey(NamedTuple):
    """Where a piece of data lives: run, data type and the lineage it was made with."""

    run_id: str
    data_type: str
    lineage: dict

    @property
    def lineage_hash(self) -> str:
        """The hash of the lineage that names the stored data (strax's, so stores are shared)."""
        return deterministic_hash(self.lineage)

    def __str__(self) -> str:
        return f"{self.run_id}-{self.data_type}-{self.lineage_hash}"
