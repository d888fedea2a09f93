"""Chains of parallel plugins, fused into one step per chunk.

When plugin B reads only plugin A's output, and nothing else reads, saves or returns that
output, the intermediate data never needs to leave the worker: a step of ``A+B`` runs A's
compute and feeds its chunks straight to B's, in one thread hop, or in one process job where
only A's input crosses into the worker and only B's output comes back. This is strax's
"inlining" of parallel plugins, decided per request (``Context.pipeline``); a user sees one
component ``Records+Peaks+PeakBasics`` in the run summary, and errors still name the inner
plugin that raised.

Only plain compute plugins (stateless across chunks, strax's rule for ``parallel`` plugins) are
fused; family plugins that override ``process_work`` keep their own task. Thread plugins fuse
with thread plugins and process plugins with process plugins: a ``parallel=True`` plugin
never lands in a worker process it did not ask for (it may not pickle, or may rely on this
process).

An intermediate data type that is saved (but read by nothing else) does not stop a chain when
its saver does not rechunk: the chain writes its chunk files itself, where they were made
(``storage.inline``), and passes on only a ``WrittenChunk`` (range and metadata entry) to the
saver. So with ``parallel="process"``, raw data crosses into the worker once, records are
compressed and written there, and only peaks come back.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ..chunk import Chunk
from ..errors import AsyncstraxError
from ..plugins.base import Plugin, Work

__all__ = ["FusedChain", "fuse_parallel_chains"]


class FusedChain(Plugin):
    """Consecutive single-input parallel plugins that run as one."""

    def __init__(self, stages: Sequence[Plugin]) -> None:  # noqa: D107 - Plugin's init skipped
        self.stages = list(stages)
        first, last = self.stages[0], self.stages[-1]
        self.provides = last.provides  # type: ignore[misc]
        self.depends_on = first.depends_on  # type: ignore[misc]
        self.deps = first.deps
        self.config = {}
        self.run_id = first.run_id
        self.dtype = last.dtype
        self.data_kind = last.data_kind
        self.lineage = getattr(last, "lineage", None)
        self.parallel = (  # type: ignore[misc]
            "process" if any(s.parallel == "process" for s in self.stages) else True
        )
        #: saved intermediate data types the chain writes itself (storage.inline.InlineWrite)
        self.inline: dict[str, Any] = {}

    def save_inline(self, data_type: str, spec: Any) -> None:
        """Write ``data_type`` (made by an inner stage) with ``spec``, and provide it as
        WrittenChunks for its saver."""
        stage = next(s for s in self.stages[:-1] if s.provides[0] == data_type)
        last = self.stages[-1]
        if not self.inline:
            self.dtype = {last.provides[0]: last.dtype}
            self.data_kind = {last.provides[0]: last.data_kind}
        self.inline[data_type] = spec
        self.provides = (*self.provides, data_type)  # type: ignore[misc]
        self.dtype[data_type] = stage.dtype
        self.data_kind[data_type] = stage.data_kind

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.stages)

    def dependencies_by_kind(self) -> dict[str, list[str]]:
        return self.stages[0].dependencies_by_kind()

    def version(self, run_id: str | None = None) -> str:
        return self.stages[-1].version(run_id)

    def setup(self) -> None:
        from .pipeline import _setup

        for stage in self.stages:
            _setup(stage)

    def warm_up(self) -> None:
        from .pipeline import _ready

        for stage in self.stages:
            _ready(stage)

    def process_work(self, work: Work) -> list[dict[str, Chunk]]:
        if work.flush:  # only plain plugins are fused: they hold nothing back
            return []
        outputs = self._run_stage(self.stages[0], work, work)
        written: dict[str, Chunk] = {}
        for previous, stage in zip(self.stages[:-1], self.stages[1:]):
            data_type = previous.provides[0]
            kind = previous.data_kind_for(data_type)
            spec = self.inline.get(data_type)
            if spec is not None:
                if len(outputs) != 1:
                    raise AsyncstraxError(
                        f"{previous.name} made {len(outputs)} chunks in one step; a chain that "
                        f"saves {data_type!r} itself needs exactly one", plugin=previous.name,
                        data_type=data_type, chunk_i=work.chunk_i)
                written[data_type] = self._write(spec, outputs[0][data_type], work)
            following = []
            for produced in outputs:
                chunk = produced[data_type]
                step = Work(work.chunk_i, chunk.start, chunk.end,
                            {kind: [(data_type, [chunk.data])]}, is_last=work.is_last)
                following.extend(self._run_stage(stage, step, work))
            outputs = following
        if written:
            if len(outputs) != 1:
                last = self.stages[-1]
                raise AsyncstraxError(
                    f"{last.name} made {len(outputs)} chunks in one step; a chain that saves "
                    f"{sorted(written)} itself needs exactly one", plugin=last.name,
                    chunk_i=work.chunk_i)
            outputs = [{**outputs[0], **written}]
        return outputs

    @staticmethod
    def _write(spec: Any, chunk: Chunk, work: Work) -> Chunk:
        try:
            return spec.write(chunk, work.chunk_i)  # type: ignore[no-any-return]
        except AsyncstraxError as error:
            raise error.add_context(data_type=chunk.data_type, run_id=chunk.run_id,
                                    chunk_i=work.chunk_i)

    @staticmethod
    def _run_stage(stage: Plugin, step: Work, work: Work) -> list[dict[str, Chunk]]:
        """One inner plugin's step; its errors name the inner plugin, not the chain."""
        from .pipeline import _plugin_error

        try:
            return stage.process_work(step)
        except AsyncstraxError as error:
            raise error.add_context(plugin=stage.name, data_type=stage.provides[0],
                                    run_id=stage.run_id, chunk_i=work.chunk_i,
                                    time_range=(step.start, step.end))
        except Exception as error:
            raise _plugin_error(stage, error, work.chunk_i, (step.start, step.end)) from error

    def __getstate__(self) -> dict[str, Any]:
        """For a worker process: inner plugins with their dependencies as small stand-ins."""
        from .process_pool import _DepStub

        state = dict(self.__dict__)
        stages = []
        for stage in self.stages:
            clone = object.__new__(type(stage))
            clone.__dict__.update({k: v for k, v in stage.__dict__.items()
                                   if k not in ("_setup_done", "_warmed_up", "_call_plan")})
            clone.deps = {dt: _DepStub(dep) for dt, dep in stage.deps.items()}  # type: ignore[misc]
            stages.append(clone)
        state["stages"] = stages
        state["deps"] = stages[0].deps
        return state


def _fusable(plugin: Plugin) -> bool:
    return (
        bool(plugin.parallel)
        and not plugin.multi_output
        and len(plugin.depends_on) == 1
        and type(plugin).process_work is Plugin.process_work
    )


def fuse_parallel_chains(
    plugins: Sequence[Plugin], keep_separate: Collection[str]
) -> list[Plugin]:
    """Replace runs of fusable plugins by FusedChains; ``plugins`` in dependency order.

    ``keep_separate``: data types that must stay visible (targets, saved data types, ...).
    """
    readers: dict[str, int] = {}
    for plugin in plugins:
        for dt in plugin.depends_on:
            readers[dt] = readers.get(dt, 0) + 1
    by_input = {p.depends_on[0]: p for p in plugins if _fusable(p)}
    fused_into: dict[int, list[Plugin]] = {}
    absorbed: set[int] = set()
    for plugin in plugins:
        if id(plugin) in absorbed or not _fusable(plugin):
            continue
        chain = [plugin]
        while True:
            out = chain[-1].provides[0]
            nxt = by_input.get(out)
            if (nxt is None or out in keep_separate or readers.get(out, 0) != 1
                    or (nxt.parallel == "process") != (plugin.parallel == "process")):
                break
            chain.append(nxt)
        if len(chain) > 1:
            fused_into[id(plugin)] = chain
            absorbed.update(id(p) for p in chain[1:])
    result: list[Plugin] = []
    for plugin in plugins:
        if id(plugin) in absorbed:
            continue
        stages = fused_into.get(id(plugin))
        result.append(FusedChain(stages) if stages else plugin)
    return result
