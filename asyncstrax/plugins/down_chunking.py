"""DownChunkingPlugin: ``compute`` yields several output chunks per input step.

As strax's DownChunkingPlugin: ``compute`` is a generator yielding chunks made with
``self.chunk(start=..., end=..., data=...)`` (a multi-output plugin yields dicts
``{data_type: chunk}`` with every data type it provides), so big output can leave in pieces of a
convenient size. Per data type, the chunks yielded for one step must be contiguous and cover the
step's ``[start, end)`` exactly (the runtime passes ``start`` and ``end`` to compute when it
takes them); anything else is a ``PluginGaveWrongOutput`` naming the plugin. As in strax, a
DownChunkingPlugin cannot be ``parallel``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, ClassVar

from ..chunk import Chunk
from ..errors import AsyncstraxError, PluginGaveWrongOutput
from .base import Plugin, Work, _as_wrong_output, refuse_parallel

__all__ = ["DownChunkingPlugin"]


class DownChunkingPlugin(Plugin):
    """Plugin whose compute is a generator of output chunks."""

    parallel: ClassVar[bool | str] = False

    def __init__(self) -> None:
        super().__init__()
        refuse_parallel(self, "DownChunkingPlugin")

    def process_work(self, work: Work) -> list[dict[str, Chunk]]:
        """Run compute (a generator) on one step; returns every chunk it yielded, in order.

        Each yield becomes one ``{data_type: chunk}``. A compute that is not a generator, a
        yield of the wrong type or dtype, or chunks that are not contiguous or do not cover
        ``[work.start, work.end)`` exactly raise ``PluginGaveWrongOutput``. A ``flush`` step
        gives nothing.
        """
        if work.flush:
            return []
        inputs = self.merge_inputs(work)
        result = self.call_compute(inputs, work.start, work.end, work.chunk_i)
        if not isinstance(result, Generator):
            raise PluginGaveWrongOutput(
                f"{self.name} is a DownChunkingPlugin: compute must be a generator yielding "
                f"chunks (self.chunk(start=..., end=..., data=...)), but it returned "
                f"{type(result).__name__}",
                plugin=self.name,
            )
        try:
            return self._collect(result, work)
        except AsyncstraxError as error:
            raise _as_wrong_output(error).add_context(plugin=self.name) from None
        finally:
            result.close()

    def _collect(self, result: Any, work: Work) -> list[dict[str, Chunk]]:
        cursor = {dt: work.start for dt in self.provides}
        outputs = []
        for n, item in enumerate(result):
            if isinstance(item, dict):
                if set(item) != set(self.provides):
                    raise PluginGaveWrongOutput(
                        f"yielded a dict with keys {sorted(map(str, item))}; each yield must "
                        f"hold a chunk of every provided data type {sorted(self.provides)}"
                    )
            elif self.multi_output:
                raise PluginGaveWrongOutput(
                    f"is multi-output, so compute must yield dicts {{data_type: chunk}}, got "
                    f"{type(item).__name__}"
                )
            else:
                item = {self.provides[0]: item}
            for dt, chunk in item.items():
                if not isinstance(chunk, Chunk):
                    raise PluginGaveWrongOutput(
                        f"yielded {type(chunk).__name__} for {dt!r}; a DownChunkingPlugin yields "
                        f"chunks made with self.chunk(start=..., end=..., data=...)",
                        data_type=dt,
                    )
                item[dt] = chunk = self._to_chunk(chunk, dt, chunk.start, chunk.end)
                if chunk.dtype != self.dtype_for(dt):
                    raise PluginGaveWrongOutput(
                        f"yielded a chunk of {dt!r} with dtype {chunk.dtype}, but {dt!r} is "
                        f"declared as {self.dtype_for(dt)}",
                        data_type=dt,
                    )
                if chunk.start != cursor[dt] or chunk.end > work.end:
                    where = "the end of the previous chunk" if n else "the step's start"
                    raise PluginGaveWrongOutput(
                        f"yielded chunk {n} of {dt!r} covers [{chunk.start}, {chunk.end}), but "
                        f"it must start at {where} ({cursor[dt]}) and end by the step's end "
                        f"({work.end}): the chunks of one step must be contiguous and cover "
                        f"[{work.start}, {work.end})",
                        data_type=dt,
                    )
                cursor[dt] = chunk.end
            outputs.append(item)
        for dt, t in cursor.items():
            if t != work.end:
                raise PluginGaveWrongOutput(
                    f"the chunks yielded for {dt!r} cover [{work.start}, {t}), but the input "
                    f"covers [{work.start}, {work.end}): the chunks of one step must cover its "
                    f"whole range",
                    data_type=dt,
                )
        return outputs
