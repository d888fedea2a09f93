"""Every error asyncstrax raises, in one tree.

Each error carries what a physicist needs to find the bad data: the plugin, the data type, the
run, the chunk index and the time range, as attributes and in its message. The runtime fills in
what the place that raised did not know (a chunk does not know which plugin made it)::

    AsyncstraxError
    ├── InvalidConfiguration          bad option value, unknown option, bad plugin declaration
    │   └── RegistrationError         duplicate provider, missing dependency, dependency cycle
    ├── ChunkError                    a data-model rule is broken (strax's rules, DESIGN.md)
    │   ├── ChunkDtypeError           data does not have the declared dtype
    │   ├── ChunkBoundaryError        an item lies outside the chunk's [start, end)
    │   │   └── ChunkBoundsError      the chunk's own bounds are not a range of ns
    │   ├── ChunkSortError            items are not sorted by time
    │   ├── ChunkContinuityError      consecutive chunks leave a gap or overlap
    │   ├── ChunkMergeError           chunks of one kind disagree on range, length or times
    │   └── CannotSplit               no split time without cutting an item in two
    ├── PluginError                   a plugin's own code raised (original as __cause__)
    │   ├── PluginGaveWrongOutput     compute returned something that breaks the rules
    │   └── WorkerDied                a worker process was killed mid-step (runtime.process_pool)
    ├── DeadlockError                 every task waits and none can produce (runtime.channel)
    ├── ProcessPoolClosed             work sent to a closed process pool (runtime.process_pool)
    ├── ContextClosed                 the Context was closed while a request ran on its threads
    ├── StorageError
    │   ├── DataNotAvailable          nothing stored under that key (and nothing can make it)
    │   ├── DataExistsError           refusing to overwrite complete data
    │   └── DataCorrupted             a stored file is truncated, damaged or inconsistent
    ├── StreamError                   a publish/subscribe connection broke its protocol
    └── EventLoopError                a sync call made inside a running event loop

Errors are plain exceptions: they pickle (process pools send them back) and compare by message.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AsyncstraxError",
    "CannotSplit",
    "ChunkBoundaryError",
    "ChunkBoundsError",
    "ChunkContinuityError",
    "ChunkDtypeError",
    "ChunkError",
    "ChunkMergeError",
    "ContextClosed",
    "DataCorrupted",
    "DataExistsError",
    "DataNotAvailable",
    "EventLoopError",
    "InvalidConfiguration",
    "PluginError",
    "PluginGaveWrongOutput",
    "RegistrationError",
    "StorageError",
    "StreamError",
]

_CONTEXT_FIELDS = ("plugin", "data_type", "run_id", "chunk_i", "time_range")


class AsyncstraxError(Exception):
    """Base of every asyncstrax error.

    ``rule`` is the sentence saying what went wrong; the context fields (plugin, data type, run,
    chunk index, time range) are added where known and rendered after it.
    """

    def __init__(
        self,
        rule: str,
        *,
        plugin: str | None = None,
        data_type: str | None = None,
        run_id: str | None = None,
        chunk_i: int | None = None,
        time_range: tuple[int, int] | None = None,
    ) -> None:
        self.rule = rule
        self.plugin = plugin
        self.data_type = data_type
        self.run_id = run_id
        self.chunk_i = chunk_i
        self.time_range = time_range
        super().__init__(rule)

    def add_context(self, **fields: Any) -> AsyncstraxError:
        """Fill in context fields not yet known; returns self so it can be re-raised."""
        for name, value in fields.items():
            if name not in _CONTEXT_FIELDS:
                raise TypeError(f"unknown error context field {name!r}")
            if getattr(self, name) is None and value is not None:
                setattr(self, name, value)
        return self

    def __str__(self) -> str:
        where = []
        if self.plugin is not None:
            where.append(f"plugin {self.plugin}")
        if self.data_type is not None:
            where.append(f"data type {self.data_type!r}")
        if self.run_id is not None:
            where.append(f"run {self.run_id!r}")
        if self.chunk_i is not None:
            where.append(f"chunk {self.chunk_i}")
        if self.time_range is not None:
            where.append(f"time range [{self.time_range[0]}, {self.time_range[1]})")
        return f"{self.rule} ({', '.join(where)})" if where else self.rule

    def __reduce__(self) -> tuple[Any, ...]:
        fields = {name: getattr(self, name) for name in _CONTEXT_FIELDS}
        return (_rebuild, (type(self), self.rule, fields, self.__dict__))


def _rebuild(
    cls: type[AsyncstraxError], rule: str, fields: dict, state: dict
) -> AsyncstraxError:
    error = cls.__new__(cls)
    AsyncstraxError.__init__(error, rule, **fields)
    error.__dict__.update(state)
    return error


class InvalidConfiguration(AsyncstraxError):
    """An option value, option name or plugin declaration is not acceptable."""


class RegistrationError(InvalidConfiguration):
    """The plugin graph cannot be built: duplicate providers, missing dependencies, cycles."""


class ChunkError(AsyncstraxError):
    """A data-model rule is broken by the data in (or between) chunks."""


class ChunkDtypeError(ChunkError):
    """The data's dtype is not the dtype declared for its data type."""


class ChunkBoundaryError(ChunkError):
    """An item starts before the chunk's start or ends after its end."""


class ChunkBoundsError(ChunkBoundaryError, ValueError):
    """A chunk's own ``[start, end)`` is not a range of ns: a bound that is not an integer, a
    negative start, or a start after the end. Also a ValueError, as strax raises."""


class ChunkSortError(ChunkError):
    """The items of a chunk are not sorted by time."""


class ChunkContinuityError(ChunkError):
    """Consecutive chunks of one data type leave a gap or overlap in time."""


class ChunkMergeError(ChunkError):
    """Chunks of one data kind do not cover the same items and range."""


class CannotSplit(ChunkError):
    """A chunk cannot be split at the requested time without cutting an item."""


class PluginError(AsyncstraxError):
    """A plugin's own code raised; the original exception is the ``__cause__``."""


class PluginGaveWrongOutput(PluginError):
    """A plugin returned data that breaks its declaration (dtype, order, time range)."""


class StorageError(AsyncstraxError):
    """Base for storage problems."""


class DataNotAvailable(StorageError):
    """No stored data under the key, and it cannot be made here."""


class DataExistsError(StorageError):
    """Complete data exists under the key and will not be overwritten."""


class DataCorrupted(StorageError):
    """A stored file is truncated, damaged, or disagrees with its metadata."""


class StreamError(AsyncstraxError):
    """A stream connection broke its protocol or closed before the end of the run."""


class EventLoopError(AsyncstraxError, RuntimeError):
    """A blocking call was made from inside a running event loop; use the async form."""


class ContextClosed(AsyncstraxError, RuntimeError):
    """The Context was closed (``close()``, leaving ``async with``) while a request still
    ran on its worker threads: the request cannot go on."""

