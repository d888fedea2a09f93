"""strax 2.2.3 and asyncstrax read each other's data, and agree on lineage hashes.

strax runs in a subprocess of the interpreter named by ``ASYNCSTRAX_STRAX_PYTHON`` (e.g. a
separate virtualenv: ``python3 -m venv /tmp/straxvenv && /tmp/straxvenv/bin/pip install
strax==2.2.3``), or of this interpreter if it can import strax; otherwise the test is skipped.

Checked, both ways:
- ``deterministic_hash`` of several lineages, and the lineage hash of equivalent plugins (same
  class name, version and options) in a strax and an asyncstrax context;
- data saved by asyncstrax (lz4 and blosc) is found by strax (``is_stored``) and loads identical;
- data saved by strax with blosc (its default), lz4 and zstd loads identical here, chunk by
  chunk. Codecs not installed here are read by asyncstrax running in the strax interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The same plugins for both frameworks: ``base`` is strax.Plugin or asyncstrax.Plugin, ``Config``
# is strax.Config or asyncstrax.Config.
PLUGINS = textwrap.dedent(
    '''
    import numpy as np

    # numpy's syntax, titles included (strax reads a 3-tuple whose first item is not a tuple
    # as its own "lazy" (name, type, comment) form)
    DTYPE = [("time", "<i8"), ("endtime", "<i8"), (("an area", "x"), "<f4"),
             ("channel", "<i2"), (("a waveform", "wf"), "<i2", (5,))]
    N_CHUNKS = 5
    RUN_ID = "007"

    def make_data(seed, chunk_i):
        if chunk_i == 2:
            return np.zeros(0, DTYPE)
        rng = np.random.default_rng([seed, chunk_i])
        n = 100 + 10 * chunk_i
        d = np.zeros(n, DTYPE)
        t = np.sort(rng.integers(0, 900, n)) + chunk_i * 1000
        d["time"] = t
        d["endtime"] = t + rng.integers(0, 100, n)
        d["x"] = rng.normal(size=n)
        d["channel"] = rng.integers(0, 500, n)
        d["wf"] = rng.integers(-1000, 1000, (n, 5))
        return d

    def make_plugin(base, Config, data_type, compressor):
        def is_ready(self, chunk_i):
            return chunk_i < N_CHUNKS

        def source_finished(self):
            return True

        def compute(self, chunk_i):
            return self.chunk(start=chunk_i * 1000, end=(chunk_i + 1) * 1000,
                              data=make_data(self.config["seed"], chunk_i))

        attrs = dict(
            provides=data_type, depends_on=(), data_kind=data_type, dtype=DTYPE,
            __version__="1.2.3", compressor=compressor, rechunk_on_save=False,
            seed=Config(default=3, type=int, help="seed"),
            gain=Config(default=0.5, help="tracked option"),
            thresholds=Config(default=(1, 2, 3), help="a tuple option"),
            is_ready=is_ready, source_finished=source_finished, compute=compute,
        )
        return type("Things", (base,), attrs)

    CODECS = {"things_blosc": "blosc", "things_lz4": "lz4", "things_zstd": "zstd"}
    '''
)

STRAX_SIDE = textwrap.dedent(
    '''
    import json, os, sys
    import numpy as np
    import strax

    job = json.load(open(sys.argv[1]))
    exec(open(job["plugins"]).read())
    out = {"strax_version": strax.__version__}
    out["hashes"] = [strax.deterministic_hash(lineage) for lineage in job["lineages"]]

    def context(path, data_type, readonly=False):
        st = strax.Context(storage=[strax.DataDirectory(path, readonly=readonly)],
                           config=job["config"])
        st.register(make_plugin(strax.Plugin, strax.Config, data_type, CODECS[data_type]))
        return st

    out["keys"] = {}
    for dt in CODECS:
        out["keys"][dt] = str(context(job["strax_dir"], dt).key_for(RUN_ID, dt))
    # strax saves with each codec
    for dt in CODECS:
        context(job["strax_dir"], dt).make(RUN_ID, dt)
    # strax loads what asyncstrax saved (read-only: it must find it, never remake it)
    out["found_ours"] = {}
    for dt in job["ours"]:
        st = context(job["ours_dir"], dt, readonly=True)
        out["found_ours"][dt] = bool(st.is_stored(RUN_ID, dt))
        if out["found_ours"][dt]:
            md = st.get_metadata(RUN_ID, dt)
            out.setdefault("ours_metadata_writer", {})[dt] = md.get("asyncstrax_version")
            np.save(os.path.join(job["npy_dir"], f"strax_loaded_ours_{dt}.npy"),
                    st.get_array(RUN_ID, dt))
    json.dump(out, open(job["result"], "w"))
    '''
)

# asyncstrax reading strax's data inside the strax interpreter (for codecs not installed here)
OUR_LOADER_IN_STRAX_ENV = textwrap.dedent(
    '''
    import asyncio, json, sys
    import numpy as np
    from asyncstrax.lineage import DataKey
    from asyncstrax.storage import FileStore

    job = json.load(open(sys.argv[1]))
    store = FileStore(job["strax_dir"], readonly=True)

    async def load(key, dtype):
        loader = store.loader(key, data_kind=key.data_type, dtype=dtype)
        return [item[key.data_type] async for item in loader.chunks()]

    for dt, lineage in job["lineages"].items():
        key = DataKey(job["run_id"], dt, lineage)
        assert store.find(key), key
        chunks = asyncio.run(load(key, np.dtype(eval(job["dtype"]))))
        np.save(job["npy"][dt], np.concatenate([c.data for c in chunks]))
        json.dump([[c.start, c.end] for c in chunks], open(job["npy"][dt] + ".json", "w"))
    '''
)

LINEAGES = [
    {"records": ["Records", "0.0.1", {}]},
    {"peaks": ["Peaks", "1.2.0", {"gain": 0.5, "n": 3, "name": "x", "flag": True,
                                  "nothing": None, "nested": {"b": [1, 2], "a": {"z": 1.5}}}],
     "records": ["Records", "0.0.1", {"thresholds": [1, 2, 3], "pairs": [[1, "a"], [2, "b"]]}]},
    {"événements": ["Events", "2", {"unicode": "µs", "big": 2**62, "neg": -1e-300}]},
]


def strax_python() -> str | None:
    env = os.environ.get("ASYNCSTRAX_STRAX_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("strax") is not None:
        return sys.executable
    return None


def run_python(python, script, job, tmp_path, name, extra_path=None):
    job_file = tmp_path / f"{name}.json"
    job_file.write_text(json.dumps(job))
    script_file = tmp_path / f"{name}.py"
    script_file.write_text(script)
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([extra_path, env.get("PYTHONPATH", "")])
    proc = subprocess.run([python, str(script_file), str(job_file)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_strax_reads_ours_and_we_read_strax(tmp_path):
    python = strax_python()
    if python is None:
        pytest.skip("strax is not importable here and ASYNCSTRAX_STRAX_PYTHON is not set "
                    "(python3 -m venv /tmp/straxvenv && /tmp/straxvenv/bin/pip install "
                    "strax==2.2.3; export ASYNCSTRAX_STRAX_PYTHON=/tmp/straxvenv/bin/python)")

    import asyncstrax
    from asyncstrax.lineage import deterministic_hash
    from asyncstrax.storage import FileStore, available_codecs

    namespace: dict = {}
    exec(PLUGINS, namespace)
    plugins_file = tmp_path / "plugins.py"
    plugins_file.write_text(PLUGINS)
    config = {"seed": 11, "gain": 0.25}
    ours_dir, strax_dir, npy_dir = tmp_path / "ours", tmp_path / "strax", tmp_path / "npy"
    npy_dir.mkdir()
    expected = np.concatenate([namespace["make_data"](11, i) for i in range(5)])
    run_id = namespace["RUN_ID"]

    def our_context(path, dt, readonly=False):
        # each with the codec its name says (blosc: ours shuffles, strax's does not)
        plugin = namespace["make_plugin"](asyncstrax.Plugin, asyncstrax.Config, dt,
                                          namespace["CODECS"][dt])
        return asyncstrax.Context(storage=FileStore(path, readonly=readonly), register=plugin,
                                  config=config)

    # 1. asyncstrax saves (lz4 and blosc), through a real Context and pipeline.
    ours = ["things_lz4", "things_blosc"]
    for dt in ours:
        ctx = our_context(ours_dir, dt)
        ctx.make(run_id, dt)
        assert ctx.is_stored(run_id, dt)

    # 2. strax: hashes, keys, saves with each codec, loads ours.
    job = dict(plugins=str(plugins_file), lineages=LINEAGES, config=config, ours=ours,
               strax_dir=str(strax_dir), ours_dir=str(ours_dir), npy_dir=str(npy_dir),
               result=str(tmp_path / "strax_result.json"))
    run_python(python, STRAX_SIDE, job, tmp_path, "strax_side")
    result = json.loads((tmp_path / "strax_result.json").read_text())
    print("strax version", result["strax_version"])

    # deterministic_hash agrees with strax's
    assert [deterministic_hash(lineage) for lineage in LINEAGES] == result["hashes"]
    # equivalent plugins give the same key (lineage and hash)
    for dt in namespace["CODECS"]:
        assert str(our_context(ours_dir, dt).key_for(run_id, dt)) == result["keys"][dt]

    # strax found our data (no recompute: its store was read-only) and loaded it identical
    for dt in ours:
        assert result["found_ours"][dt], f"strax did not find asyncstrax's {dt}"
        assert result["ours_metadata_writer"][dt] == asyncstrax.__version__
        np.testing.assert_array_equal(np.load(npy_dir / f"strax_loaded_ours_{dt}.npy"),
                                      expected)

    # 3. we load strax's data, chunk by chunk.
    here = set(available_codecs())
    elsewhere = {}
    for dt, codec in namespace["CODECS"].items():
        ctx = our_context(strax_dir, dt, readonly=True)
        key = ctx.key_for(run_id, dt)
        store = ctx.storage[0]
        assert store.find(key), f"asyncstrax does not find strax's {dt}"
        md = store.get_metadata(key)
        assert md["compressor"] == codec
        if codec not in here:
            elsewhere[dt] = key.lineage
            continue
        np.testing.assert_array_equal(ctx.get_array(run_id, dt), expected)
        assert ctx.last_summary.components[0].kind == "load"  # loaded, not recomputed
        chunks = list(ctx.get_iter(run_id, dt))
        assert [(c.start, c.end) for c in chunks] == [(i * 1000, (i + 1) * 1000)
                                                      for i in range(5)]
    if elsewhere:
        npys = {dt: str(npy_dir / f"ours_loaded_strax_{dt}.npy") for dt in elsewhere}
        job = dict(strax_dir=str(strax_dir), lineages=elsewhere, run_id=run_id,
                   dtype=repr(namespace["DTYPE"]), npy=npys)
        run_python(python, OUR_LOADER_IN_STRAX_ENV, job, tmp_path, "our_loader", REPO)
        for path in npys.values():
            np.testing.assert_array_equal(np.load(path), expected)
            ranges = json.load(open(path + ".json"))
            assert ranges == [[i * 1000, (i + 1) * 1000] for i in range(5)]
        print("read in the strax interpreter (codec not installed here):", sorted(elsewhere))
