"""test_framework_overhead's trivial chain as strax 2.x plugins, run by strax; one JSON line out.

    <strax python> benchmarks/strax_overhead.py [--chunks 10000] [--plugins 8] [--warm-chunks 100]

Child of ``benchmarks/test_framework_overhead.py`` (run that, not this). It needs an interpreter
where ``import strax`` works (a separate virtualenv: strax is *not* a dependency of
asyncstrax). Not a test module (no ``test_`` prefix): pytest never imports it.

The chain is the same as the test's: a source yielding ``--chunks`` chunks of 10 items
(``time``, ``endtime``, ``value``; chunk i spans [100 i, 100 (i + 1)), its items a copy of one
base array shifted by 100 i), then ``--plugins - 1`` pass-through plugins, each returning its
input as it is, the last one the target. strax's default processor (single thread, no
storage) runs it; ``get_iter`` hands the target's chunks to a loop that drops them.

Plugin count convention (the same in test_framework_overhead.py): ``--plugins`` counts EVERY
plugin of the chain, the source included (default 8 = 1 source + 7 pass-throughs), and
``us_per_chunk_per_plugin = seconds / chunks / plugins * 1e6``.

A short run of ``--warm-chunks`` chunks first (imports, first-call paths), then the timed run
on a fresh Context built outside the timing (as the test does for asyncstrax). Prints::

    {"engine": "strax 2.2.3", "chunks": ..., "plugins": ..., "seconds": ...,
     "chunks_per_second": ..., "us_per_chunk_per_plugin": ...}
"""

from __future__ import annotations

import argparse
import json
import time


def build_plugins(n_chunks: int, n_plugins: int) -> list:
    import numpy as np
    import strax

    item_dtype = np.dtype([("time", np.int64), ("endtime", np.int64), ("value", np.float32)])

    class TinyChunks(strax.Plugin):
        """Source: n_chunks chunks of 10 items each, as a DAQ reader with small chunks."""

        __version__ = "0.0.1"
        provides = "level0"
        depends_on = ()
        data_kind = "level0"
        dtype = item_dtype
        rechunk_on_save = False

        def setup(self):
            base = np.zeros(10, item_dtype)
            base["time"] = np.arange(10) * 10
            base["endtime"] = base["time"] + 5
            self.base = base

        def is_ready(self, chunk_i):
            return chunk_i < n_chunks

        def source_finished(self):
            return True

        def compute(self, chunk_i):
            data = self.base.copy()
            data["time"] += chunk_i * 100
            data["endtime"] += chunk_i * 100
            return self.chunk(start=chunk_i * 100, end=(chunk_i + 1) * 100, data=data)

    def compute(self, **kwargs):
        # strax passes the input by its data kind's name (level{n-1}); return it unchanged
        (data,) = kwargs.values()
        return data

    plugins: list = [TinyChunks]
    for level in range(1, n_plugins):
        plugins.append(type(f"PassThrough{level}", (strax.Plugin,), {
            "__version__": "0.0.1",
            "provides": f"level{level}",
            "depends_on": f"level{level - 1}",
            "data_kind": f"level{level}",
            "dtype": item_dtype,
            "rechunk_on_save": False,
            "compute": compute,
        }))
    return plugins


def run(n_chunks: int, n_plugins: int) -> tuple[float, int]:
    import strax

    st = strax.Context(storage=[], register=build_plugins(n_chunks, n_plugins))
    target = f"level{n_plugins - 1}"
    n = 0
    t0 = time.perf_counter()
    for chunk in st.get_iter("bench", target, progress_bar=False):
        n += len(chunk.data)
    return time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--plugins", type=int, default=8,
                        help="every plugin of the chain, the source included")
    parser.add_argument("--warm-chunks", type=int, default=100)
    args = parser.parse_args()

    import strax

    if args.warm_chunks:
        run(args.warm_chunks, args.plugins)
    seconds, n_items = run(args.chunks, args.plugins)
    assert n_items == 10 * args.chunks, n_items
    print(json.dumps(dict(
        engine=f"strax {strax.__version__}", chunks=args.chunks, plugins=args.plugins,
        seconds=seconds, chunks_per_second=args.chunks / seconds,
        us_per_chunk_per_plugin=seconds / args.chunks / args.plugins * 1e6,
    )))


if __name__ == "__main__":
    main()
