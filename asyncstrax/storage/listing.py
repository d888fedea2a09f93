"""What a store holds: one row per data folder, for ``asyncstrax ls PATH`` and for humans.

Reads only folder names, metadata files and file sizes (never a chunk's contents), so listing a
large store is quick. Temporary folders (writes in progress, interrupted or failed) are listed
too, marked incomplete, with the failure's last line when one was recorded.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import DataCorrupted
from .metadata import is_complete, metadata_filename, parse_folder_name, read_metadata

__all__ = ["list_stored"]

#: runs named when ``asyncstrax ls --run`` finds nothing of the run asked for
_RUNS_SHOWN = 10


def _folder_size(path: str) -> int:
    total = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    except OSError:
        pass
    return total


def list_stored(path: str | os.PathLike) -> list[dict[str, Any]]:
    """One dict per data folder under ``path``, sorted by run, data type, then folder name.

    Keys: ``run_id, data_type, lineage_hash, folder, complete`` (bool), ``temporary`` (bool:
    a ``_temp`` folder), ``items, chunks, size_on_disk`` (bytes of every file in the folder),
    ``uncompressed_size`` (bytes of the arrays), ``compression_ratio`` (uncompressed / on disk,
    None if unknown), ``compressor, data_kind, start, end``, and ``problem`` (None, the last line
    of a recorded exception, or why the metadata could not be read).
    """
    path = os.fspath(path)
    rows = []
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    for name in names:
        folder = os.path.join(path, name)
        parsed = parse_folder_name(name)
        if parsed is None or not os.path.isdir(folder):
            continue
        run_id, data_type, lineage_hash, temporary = parsed
        row: dict[str, Any] = dict(
            run_id=run_id, data_type=data_type, lineage_hash=lineage_hash, folder=folder,
            complete=False, temporary=temporary, items=None, chunks=None,
            size_on_disk=_folder_size(folder), uncompressed_size=None, compression_ratio=None,
            compressor=None, data_kind=None, start=None, end=None, problem=None,
        )
        try:
            md = read_metadata(os.path.join(folder, metadata_filename(data_type, lineage_hash)))
        except FileNotFoundError:
            row["problem"] = "no metadata file"
        except DataCorrupted as error:
            row["problem"] = error.rule
        else:
            chunks = md.get("chunks") or []
            row.update(
                complete=is_complete(md) and not temporary,
                items=sum(int(c.get("n", 0)) for c in chunks),
                chunks=len(chunks),
                uncompressed_size=sum(int(c.get("nbytes", 0)) for c in chunks),
                compressor=md.get("compressor"),
                data_kind=md.get("data_kind"),
                start=md.get("start"),
                end=md.get("end"),
            )
            if md.get("exception"):
                lines = [x for x in str(md["exception"]).splitlines() if x.strip()]
                row["problem"] = lines[-1] if lines else "writing failed"
            elif "writing_ended" not in md:
                row["problem"] = "writing did not end"
            on_disk = row["size_on_disk"]
            if on_disk and row["uncompressed_size"]:
                row["compression_ratio"] = row["uncompressed_size"] / on_disk
        rows.append(row)
    rows.sort(key=lambda r: (r["run_id"], r["data_type"], r["folder"]))
    return rows


def add_ls_arguments(parser: Any) -> None:
    """Arguments of ``asyncstrax ls``."""
    parser.add_argument("path", help="a storage folder (FileStore / strax DataDirectory)")
    parser.add_argument("--run", default=None, help="only this run")


def run_ls(args: Any) -> int:
    """``asyncstrax ls PATH``: one line per stored data type, complete or not."""
    if not os.path.isdir(args.path):
        what = "is not a folder" if os.path.exists(args.path) else "does not exist"
        print(f"asyncstrax ls: {args.path} {what}", file=sys.stderr)
        return 2
    stored = list_stored(args.path)
    rows = [r for r in stored if args.run is None or r["run_id"] == args.run]
    if not rows:
        if not stored:
            print(f"nothing stored in {args.path}")
        else:  # the folder holds other runs: say which, so a typo is easy to spot
            runs = sorted({r["run_id"] for r in stored})
            shown = ", ".join(runs[:_RUNS_SHOWN])
            more = f" and {len(runs) - _RUNS_SHOWN} more" if len(runs) > _RUNS_SHOWN else ""
            print(f"run {args.run} has nothing stored in {args.path}; it holds "
                  f"{len(runs)} other run{'s' if len(runs) != 1 else ''}: {shown}{more}")
        return 0
    # columns as wide as their longest entry, so long run ids and names never run together
    run_w = max(len("run"), *(len(r["run_id"]) for r in rows)) + 2
    type_w = max(len("data type"), *(len(r["data_type"]) for r in rows)) + 2
    print(f"{'run':<{run_w}}{'data type':<{type_w}}{'hash':<12}{'items':>10}{'on disk':>12}"
          f"{'ratio':>9}  status")
    for r in rows:
        ratio = r.get("compression_ratio")
        status = "complete" if r.get("complete") else f"INCOMPLETE ({r.get('problem') or '?'})"
        print(
            f"{r['run_id']:<{run_w}}{r['data_type']:<{type_w}}{r['lineage_hash']:<12}"
            f"{r.get('items') or 0:>10}{_size(r.get('size_on_disk') or 0):>12}"
            f"{(f'{ratio:.2f}' if ratio else '-'):>9}  {status}"
        )
    return 0


def _size(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes} B"
