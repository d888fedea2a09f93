"""Rechunking on save: write chunks of about the plugin's ``chunk_target_size_mb``.

A live DAQ or a down-chunking plugin can emit thousands of small chunks; saved as they come they
would make thousands of tiny files (slow to list, slow to load). A plugin that emits one huge
chunk would make one file too big to load lazily. So before writing, the saver (when the plugin's
``rechunk_on_save`` is true) merges small consecutive chunks until they reach the target size,
and splits big ones at a clean time (``Chunk.split(t, allow_early_split=True)``: no item is ever
cut in two).

Rules, chosen so data already near the target passes through untouched (no copy):

- chunks accumulate until their total reaches the target; then they are joined (one copy, or
  none if a single chunk);
- while the joined chunk is bigger than ``SLACK`` times the target, a piece of about the target
  is split off (a view) and written;
- what remains is written if it reaches the target, else kept to be joined with what follows;
- at the end, whatever is kept is written.

Memory held: at most about ``SLACK`` times the target plus one incoming chunk.
"""

from __future__ import annotations

import numpy as np

from ..chunk import Chunk

__all__ = ["Rechunker", "SLACK", "join"]

#: a chunk up to this many times the target is written whole rather than split
SLACK = 1.5


class Rechunker:
    """Feed chunks with ``receive``; write what it returns; ``flush`` at the end."""

    def __init__(self, target_size_mb: float, enabled: bool = True) -> None:
        self.target_bytes = max(1, int(float(target_size_mb) * 1e6))
        self.enabled = enabled
        self._pending: list[Chunk] = []
        self._pending_bytes = 0

    def receive(self, chunk: Chunk) -> list[Chunk]:
        """Take one chunk; returns the chunks now ready to write (often none), each of about
        the target size. Disabled, the chunk comes back as is."""
        if not self.enabled:
            return [chunk]
        self._pending.append(chunk)
        self._pending_bytes += chunk.nbytes
        if self._pending_bytes < self.target_bytes:
            return []
        merged = join(self._pending)
        self._pending, self._pending_bytes = [], 0
        out = []
        while merged.nbytes > SLACK * self.target_bytes and len(merged) > 1:
            i = max(1, self.target_bytes // merged.dtype.itemsize)
            if i >= len(merged):
                break
            left, right = merged.split(int(merged.data["time"][i]), allow_early_split=True)
            if not len(left):
                break  # one cluster of overlapping items: it cannot be split cleanly
            out.append(left)
            merged = right
        if merged.nbytes >= self.target_bytes:
            out.append(merged)
        else:
            self._pending, self._pending_bytes = [merged], merged.nbytes
        return out

    def flush(self) -> list[Chunk]:
        """At the end of the data: what is still pending, as one chunk (none if nothing is)."""
        if not self._pending:
            return []
        merged = join(self._pending)
        self._pending, self._pending_bytes = [], 0
        return [merged]


def join(chunks: list[Chunk]) -> Chunk:
    """Contiguous chunks as one (the only non-empty array kept as is, else one copy).

    Copies into an array of the exact dtype: ``np.concatenate`` would turn a non-native byte
    order or aligned offsets into numpy's canonical form, a different dtype.
    """
    first = chunks[0]
    if len(chunks) == 1:
        return first
    for prev, nxt in zip(chunks[:-1], chunks[1:]):
        if nxt.start != prev.end:
            raise ValueError(f"chunks are not contiguous: {prev} then {nxt}")
    arrays = [c.data for c in chunks if len(c)]
    if len(arrays) == 1:
        data = arrays[0]
    else:
        data = np.empty(sum(len(a) for a in arrays), dtype=first.dtype)
        i = 0
        for a in arrays:
            data[i:i + len(a)] = a
            i += len(a)
    return Chunk(
        data_type=first.data_type,
        data_kind=first.data_kind,
        dtype=first.dtype,
        run_id=first.run_id,
        start=first.start,
        end=chunks[-1].end,
        data=data,
        subruns=first.subruns,
        target_size_mb=first.target_size_mb,
    )
