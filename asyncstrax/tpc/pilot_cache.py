"""The simulator's pilot-run results, kept on disk between processes.

``Simulator.for_data_rate`` calibrates its event rate on a pilot run of 200 events (~0.35 s).
The result depends only on the detector configuration and on the simulator's code, so it is
cached like numba caches the kernels: in ``$NUMBA_CACHE_DIR`` if set, else in this package's
``__pycache__``, stamped with ``sim.py``'s modification time and size so that editing the
simulator invalidates it. A cache that cannot be read or written is ignored: the pilot then
simply runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

__all__ = ["cached_pilot"]

_FILE_NAME = "asyncstrax_sim_pilot.json"


def _cache_path() -> str:
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(os.path.dirname(__file__),
                                                             "__pycache__")
    return os.path.join(base, _FILE_NAME)


def _stamp() -> list[float]:
    st = os.stat(os.path.join(os.path.dirname(__file__), "sim.py"))
    return [st.st_mtime, st.st_size]


def _read(path: str, stamp: list[float]) -> dict[str, Any]:
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(content, dict) or content.get("stamp") != stamp:
        return {}
    values = content.get("values")
    return values if isinstance(values, dict) else {}


def _write(path: str, stamp: list[float], values: dict[str, Any]) -> None:
    """Atomically (several processes may calibrate at once; the last one wins)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pilot_")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"stamp": stamp, "values": values}, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # read-only install: calibrate in every process


def cached_pilot(key: tuple, compute: Callable[[], float]) -> float:
    """``compute()``'s value for ``key`` (a tuple of JSON-able values), from disk if known."""
    path = _cache_path()
    try:
        stamp = _stamp()
    except OSError:
        return compute()
    name = json.dumps(key)
    values = _read(path, stamp)
    if name in values:
        return float(values[name])
    value = float(compute())
    values = _read(path, stamp)  # another process may have added entries meanwhile
    values[name] = value
    _write(path, stamp, values)
    return value
