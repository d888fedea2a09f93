"""What needs no cluster: the picklable description of a Context, and the clear errors when
Dask is missing or a plugin cannot be sent to workers."""

from __future__ import annotations

import pickle
import subprocess
import sys

import dask_toy_plugins as toy
import numpy as np
import pytest

import asyncstrax as ax
from asyncstrax.distributed import ContextSpec, get_df_many, process_runs


def test_import_asyncstrax_never_imports_dask():
    code = ("import sys, asyncstrax; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ax.__path__[0] + "/..").stdout
    assert out.strip() == "[]"


def test_spec_round_trips_a_context(tmp_path):
    ctx = ax.Context(storage=[ax.FileStore(tmp_path / "a"),
                              ax.FileStore(tmp_path / "b", readonly=True, compressor="bz2")],
                     register=toy.PLUGINS, config={"n_chunks": 2}, max_workers=3)
    spec = pickle.loads(pickle.dumps(ContextSpec.from_context(ctx)))
    assert spec.plugins[0] == "dask_toy_plugins:Samples"
    rebuilt = spec.build()
    assert rebuilt.config == {"n_chunks": 2}
    assert rebuilt.context_config["max_workers"] == 3
    assert [(s.path, s.readonly, s.compressor) for s in rebuilt.storage] == [
        (str(tmp_path / "a"), False, "blosc"), (str(tmp_path / "b"), True, "bz2")]
    assert rebuilt.key_for("r", "sample_sums") == ctx.key_for("r", "sample_sums")


def test_spec_from_plugin_names():
    by_module = ContextSpec.from_plugins("dask_toy_plugins")
    assert by_module.plugins == tuple(f"dask_toy_plugins:{c.__name__}" for c in toy.PLUGINS)
    by_name = ContextSpec.from_plugins(["dask_toy_plugins:Samples, SampleSums"], storage="x")
    assert by_name.plugins == ("dask_toy_plugins:Samples", "dask_toy_plugins:SampleSums")
    assert by_name.storage[0]["path"].endswith("x")
    tpc = ContextSpec.from_plugins("asyncstrax.tpc.plugins")
    assert "asyncstrax.tpc.plugins:EventBasics" in tpc.plugins
    with pytest.raises(ax.InvalidConfiguration, match="cannot import plugin module"):
        ContextSpec.from_plugins("no_such_module_here")


def test_plugins_not_importable_by_path_are_refused_clearly(tmp_path):
    class Local(toy.SampleSums):
        provides = "local_sums"

    ctx = ax.Context(storage=ax.FileStore(tmp_path), register=[*toy.PLUGINS, Local])
    with pytest.raises(ax.InvalidConfiguration, match="inside a function.*import plugins by"):
        ContextSpec.from_context(ctx)
    with pytest.raises(ax.InvalidConfiguration, match="inside a function"):
        process_runs(ctx, ["r"], "local_sums")


def test_unpicklable_option_values_are_named(tmp_path):
    ctx = ax.Context(storage=ax.FileStore(tmp_path), register=toy.PLUGINS,
                     config={"fail_runs": (lambda: 0,)})
    with pytest.raises(ax.InvalidConfiguration, match=r"\['fail_runs'\] cannot be pickled"):
        ContextSpec.from_context(ctx)


def test_process_runs_needs_writable_storage(tmp_path):
    ctx = ax.Context(storage=ax.FileStore(tmp_path, readonly=True), register=toy.PLUGINS)
    with pytest.raises(ax.InvalidConfiguration, match="writable storage"):
        process_runs(ctx, ["r"], "samples")


def test_without_dask_the_error_says_what_to_install(tmp_path, monkeypatch):
    for name in ("distributed", "dask", "dask.dataframe"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    from asyncstrax import distributed

    ctx = ax.Context(storage=ax.FileStore(tmp_path), register=toy.PLUGINS)
    with pytest.raises(ImportError, match=r'pip install "asyncstrax\[distributed\]"'):
        process_runs(ctx, ["r"], "samples", progress_bar=False)
    with pytest.raises(ImportError, match=r'pip install "asyncstrax\[distributed\]"'):
        distributed.lazy_dataframe(ctx, ["r"], "samples")


def test_get_df_many_adds_a_run_id_column(tmp_path):
    ctx = ax.Context(register=toy.PLUGINS, config={"n_chunks": 2, "n_per_chunk": 10})
    df = get_df_many(ctx, ["a", "b"], "sample_sums")
    assert list(df.columns) == ["run_id", "time", "endtime", "wave_sum", "area_per_channel"]
    assert list(df["run_id"]) == ["a"] * 20 + ["b"] * 20
    assert list(df.index) == list(range(40))
    np.testing.assert_array_equal(df["wave_sum"][20:],
                                  ctx.get_array("b", "sample_sums")["wave_sum"])


def test_get_df_of_several_runs_takes_strax_multi_run_arguments():
    ctx = ax.Context(register=toy.PLUGINS, config={"n_chunks": 2, "n_per_chunk": 10,
                                                   "fail_runs": ["b"]})
    with pytest.raises(ax.PluginError, match="run 'b'"):
        ctx.get_df(["a", "b", "c"], "fragile")
    with pytest.warns(UserWarning, match="run 'b' failed and is left out"):
        df = ctx.get_df(["a", "b", "c"], "fragile", ignore_errors=True)
    assert list(df["run_id"].unique()) == ["a", "c"]
    bare = ctx.get_df(["a", "c"], "fragile", add_run_id_field=False, max_runs_in_flight=1)
    assert "run_id" not in bare.columns and len(bare) == len(df)
    assert ctx.get_df(["a"], "fragile", run_id_as_bytes=True)["run_id"][0] == b"a"


def test_get_df_of_several_runs_warns_once_at_the_callers_line():
    import pandas as pd

    ctx = ax.Context(register=toy.PLUGINS, config={"n_chunks": 1, "n_per_chunk": 5})
    with pytest.warns(UserWarning, match=r"leaves out the multi-dimensional fields \['wave'\]"
                      ) as record:
        df = ctx.get_df(["a", "b", "c"], "samples")
    assert len(record) == 1 and record[0].filename == __file__
    assert pd.api.types.is_string_dtype(df["run_id"])  # as strax's (not object)


class Windows(ax.Plugin):
    """Of a kind of its own (nothing in it): with samples, two kinds for one request."""

    depends_on = "samples"
    provides = "windows"
    data_kind = "windows"
    dtype = ax.time_fields

    def compute(self, samples):
        return np.zeros(0, self.dtype)


def test_process_runs_refuses_targets_of_several_kinds_before_any_cluster(tmp_path):
    ctx = ax.Context(storage=ax.FileStore(tmp_path), register=[*toy.PLUGINS, Windows])
    with pytest.raises(ax.InvalidConfiguration, match="several data kinds"):
        process_runs(ctx, ["a"], ["samples", "windows"], client=None)
