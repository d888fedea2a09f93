"""What became of each run of ``process_runs``: ``RunReport`` per run, ``RunReports`` of all."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..context import Context
from ..errors import AsyncstraxError, DataNotAvailable

__all__ = ["RunReport", "RunReports"]


@dataclasses.dataclass(frozen=True)
class RunReport:
    """What became of one run: ``status`` is ``"ok"`` (stored during the call), ``"skipped"``
    (already stored before it) or ``"failed"`` (``error``: the error's last line,
    ``traceback``: all of it).

    ``seconds``: time on the worker (0 if skipped); ``items``: stored items per target;
    ``attempts``: how many times the worker tried the run (more than 1 only with ``retries``;
    0 if it was never submitted). A run submitted although stored (``skip_stored=False``) and
    found stored by the worker is ``"skipped"`` too: its data is read, never rewritten.
    """

    run_id: str
    status: str
    seconds: float = 0.0
    items: Mapping[str, int] = dataclasses.field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """The run's data is stored (made now or before)."""
        return self.status in ("ok", "skipped")


class RunReports(list):
    """The ``RunReport`` of every run, in the order the runs were given."""

    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        """Run ids that failed, in the order given."""
        return [r.run_id for r in self if r.status == "failed"]

    @property
    def skipped(self) -> list[str]:
        """Run ids already stored before the call."""
        return [r.run_id for r in self if r.status == "skipped"]

    @property
    def done(self) -> list[str]:
        """Run ids made and saved by the call."""
        return [r.run_id for r in self if r.status == "ok"]

    def by_run(self) -> dict[str, RunReport]:
        """The reports by run id."""
        return {r.run_id: r for r in self}

    def raise_if_failed(self) -> None:
        """Raise ``AsyncstraxError`` naming every failed run and its error."""
        failed = [r for r in self if r.status == "failed"]
        if failed:
            lines = "\n".join(f"  {r.run_id}: {r.error}" for r in failed)
            raise AsyncstraxError(f"{len(failed)} of {len(self)} runs failed:\n{lines}")

    def to_dataframe(self) -> Any:
        """One row per run: status, seconds, worker, attempts, items of all targets, error."""
        import pandas as pd

        rows = [dict(run_id=r.run_id, status=r.status, seconds=r.seconds,
                     items=sum(r.items.values()), worker=r.worker, attempts=r.attempts,
                     error=r.error) for r in self]
        return pd.DataFrame(rows, columns=["run_id", "status", "seconds", "items", "worker",
                                           "attempts", "error"])

    def table(self) -> str:
        """A text table of the runs and a count of made, skipped and failed ones."""
        lines = [f"{'run':<16}{'status':<9}{'seconds':>9}{'items':>12}  error"]
        for r in self:
            lines.append(f"{r.run_id:<16}{r.status:<9}{r.seconds:>9.2f}"
                         f"{sum(r.items.values()):>12}  {r.error or ''}")
        lines.append(f"{len(self.done)} made, {len(self.skipped)} skipped, {len(self.failed)} "
                     f"failed in {self.wall_seconds:.1f} s")
        return "\n".join(lines)


def _stored_items(ctx: Context, run_id: str, targets: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for t in targets:
        try:
            md = ctx.get_metadata(run_id, t)
        except DataNotAvailable:
            continue
        out[t] = sum(int(c.get("n", 0)) for c in md.get("chunks", []))
    return out


def _error_text(error: BaseException) -> str:
    """``Type: message`` (the message's first line): enough to tell runs' failures apart."""
    message = str(error).strip()
    if not message:
        return type(error).__name__
    return f"{type(error).__name__}: {message.splitlines()[0]}"
