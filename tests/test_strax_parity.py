"""strax's Context API, used as a strax user uses it (only the import changed)."""

import json
import os

import numpy as np
import pytest
import strax_style_plugins as ssp

import asyncstrax
import asyncstrax as strax
from asyncstrax.query import add_run_id_field, apply_request_selection
from asyncstrax.strax_compat import (
    ProcessorComponents,
    RunMetadataNotAvailable,
    StraxContextMethods,
)

# Until the Context inherits the mixin, test it on a local subclass.
if issubclass(asyncstrax.Context, StraxContextMethods):
    Context = asyncstrax.Context
else:
    Context = type("Context", (StraxContextMethods, asyncstrax.Context), {})

N_PULSES = 4 * 50
SECOND = 1_000_000_000


@pytest.fixture
def st(tmp_path):
    st = Context(storage=[strax.DataDirectory(str(tmp_path / "data"))])
    st.register_all(ssp)
    return st


def write_run_doc(st, run_id, start_s, tags=(), mode="tpc", **extra):
    st.storage[0].write_run_metadata(run_id, dict(
        start=f"2024-01-01T00:00:{start_s:02d}+00:00",
        end=f"2024-01-01T00:00:{start_s + 5:02d}+00:00",
        tags=[{"name": t} for t in tags], mode=mode, **extra,
    ))


# ---------------------------------------------------------------------- plugins, strax-style
def test_strax_style_plugin_module_runs_unchanged(st):
    assert sorted(st._plugin_class_registry) == sorted([
        "pulses", "pulse_basics", "small_pulses", "large_pulses", "large_pulse_neighbours",
        "cut_big_pulse", "windows", "window_summary", "pulse_info"])
    assert "Pulses" in ssp.__all__ and "NOT_A_PLUGIN" not in ssp.__all__
    pulses = st.get_array("r1", "pulses")
    basics = st.get_array("r1", "pulse_basics", config=dict(gain=2.0))
    np.testing.assert_allclose(basics["area"], 2 * pulses["area"].astype(np.float64))
    small, large = st.get_array("r1", "small_pulses"), st.get_array("r1", "large_pulses")
    assert len(small) + len(large) == N_PULSES and (large["area"] >= 10).all()
    neighbours = st.get_array("r1", "large_pulse_neighbours")
    t = large["time"]
    expected = [((t >= x - 2000) & (t <= x + 2000)).sum() - 1 for x in t]
    np.testing.assert_array_equal(neighbours["n_neighbours"], expected)
    cut = st.get_array("r1", "cut_big_pulse")
    np.testing.assert_array_equal(cut["cut_big_pulse"], st.get_array("r1", "pulse_basics")[
        "area"] > 20)
    summary = st.get_array("r1", "window_summary")
    assert summary["n_pulses"].sum() <= N_PULSES and len(summary) == 16
    info = st.get_array("r1", "pulse_info")
    assert {"area", "channel", "cut_big_pulse"} <= set(info.dtype.names)


def test_register_all_skips_imported_base_classes(st):
    import types

    module = types.ModuleType("plugins_with_imports")
    module.Plugin = strax.Plugin
    module.OverlapWindowPlugin = strax.OverlapWindowPlugin
    module.PulseBasics = ssp.PulseBasics
    fresh = Context()
    fresh.register_all([module])
    assert list(fresh._plugin_class_registry) == ["pulse_basics"]


def test_storage_classes_and_errors_by_strax_names(tmp_path):
    store = strax.DataDirectory(str(tmp_path), readonly=True, deep_scan=True,
                                provide_run_metadata=True)
    assert store.readonly and store.deep_scan and store.provide_run_metadata
    for name in ("DataNotAvailable", "DataExistsError", "DataCorrupted",
                 "InvalidConfiguration", "PluginGaveWrongOutput"):
        assert issubclass(getattr(strax, name), Exception)
    assert issubclass(RunMetadataNotAvailable, strax.DataNotAvailable)


# ---------------------------------------------------------------------- contexts
def test_new_context_adds_or_replaces(st, tmp_path):
    st.set_config(dict(gain=3.0))
    other = strax.DataDirectory(str(tmp_path / "other"))
    st2 = st.new_context(storage=other, config=dict(min_area=5.0), allow_incomplete=True)
    assert st2.storage == st.storage + [other]
    assert st2.config == dict(gain=3.0, min_area=5.0)
    assert st2.context_config["allow_incomplete"] is True
    assert st.context_config["allow_incomplete"] is False
    assert set(st2._plugin_class_registry) == set(st._plugin_class_registry)
    assert st2.key_for("r1", "pulse_basics") == st.key_for("r1", "pulse_basics")
    assert "min_area" not in st.config
    fresh = st.new_context(storage=str(tmp_path / "x"), register=[ssp.Pulses], replace=True)
    assert list(fresh._plugin_class_registry) == ["pulses"] and fresh.config == {}
    assert fresh.storage[0].path == str(tmp_path / "x")


def test_deregister_plugins_with_missing_dependencies():
    st = Context(register=[ssp.PulseBasics, ssp.SplitPulses, ssp.CutBigPulse, ssp.PulseInfo])
    st.deregister_plugins_with_missing_dependencies()
    assert st._plugin_class_registry == {}
    st = Context(register=[ssp.Pulses, ssp.PulseBasics, ssp.LargePulseNeighbours])
    st.deregister_plugins_with_missing_dependencies()
    assert sorted(st._plugin_class_registry) == ["pulse_basics", "pulses"]


def test_purge_unused_configs_and_add_method(st):
    st.config["leftover"] = 1  # e.g. from a plugin since replaced
    with pytest.warns(UserWarning, match="leftover"):
        st.purge_unused_configs()
    assert "leftover" not in st.config

    def n_registered(self):
        return len(self._plugin_class_registry)

    Context.add_method(n_registered)
    try:
        assert st.n_registered() == 9
    finally:
        delattr(Context, "n_registered")


# ---------------------------------------------------------------------- the graph
def test_graph_information(st):
    assert st.data_itemsize("pulse_basics") == np.dtype(
        [("t", np.int64), ("e", np.int64), ("a", np.float64), ("c", np.int16)]).itemsize
    assert st.get_dependencies("large_pulse_neighbours") == {
        "large_pulses", "pulse_basics", "pulses"}
    kinds, by_type = st.get_data_kinds()
    assert sorted(kinds["pulses"]) == ["cut_big_pulse", "pulse_basics", "pulse_info", "pulses"]
    assert by_type["window_summary"] == "windows"
    assert by_type["large_pulse_neighbours"] == "large_pulses"
    assert st.root_data_types == {"pulses"}
    assert st.tree["pulse_info"] == ["pulse_basics", "cut_big_pulse"]
    assert sorted(st.inversed_tree["pulses"]) == ["pulse_basics", "windows"]
    levels = st.tree_levels[False]
    assert levels["pulses"]["level"] == 0 and levels["large_pulse_neighbours"]["level"] == 3
    assert levels["pulses"]["order"] == 0 and levels["small_pulses"]["class"] == "SplitPulses"
    assert st.tree_levels[True]["window_summary"]["level"] == 2
    assert st.get_save_when("cut_big_pulse") == strax.SaveWhen.TARGET
    assert st.get_save_when("pulses") == strax.SaveWhen.ALWAYS
    deps = st.get_dependency_plugins("large_pulses", "r1")
    assert set(deps) == {"pulse_basics", "pulses"}
    st.check_superrun()  # no plugin allows superruns: nothing to complain about


def test_search_field(st, capsys):
    fields, code = st.search_field("n_*", return_matches=True)
    assert fields == {"n_neighbours": [("large_pulse_neighbours", "LargePulseNeighbours")],
                      "n_pulses": [("window_summary", "WindowSummary")]}
    assert code["n_neighbours"] == ["LargePulseNeighbours.compute"]
    assert st.search_field("n_pulses", include_code_usage=False) is None
    assert "n_pulses is part of window_summary (provided by WindowSummary)" in (
        capsys.readouterr().out)
    assert "PulseBasics.compute" in st.search_field_usage("gain")


# ---------------------------------------------------------------------- storage
def test_get_components_before_and_after_saving(st):
    comps = st.get_components("r1", "large_pulses")
    assert isinstance(comps, ProcessorComponents)
    assert set(comps.plugins) == {"pulses", "pulse_basics", "small_pulses", "large_pulses"}
    assert comps.loaders == {} and comps.targets == ("large_pulses",)
    assert {"pulses", "large_pulses"} <= set(comps.savers)
    st.make("r1", "large_pulses")
    comps = st.get_components("r1", "large_pulses")
    assert set(comps.loaders) == {"large_pulses"} and comps.plugins == {}
    assert comps.loader_plugins["large_pulses"].__class__ is ssp.SplitPulses


def test_keys_size_availability_and_sources(st):
    keys = st.keys_for_runs("pulse_basics", ["r1", "r2"])
    assert keys == [st.key_for("r1", "pulse_basics"), st.key_for("r2", "pulse_basics")]
    assert st.get_source("r1", "pulse_basics") is None  # a source plugin can make it
    st.make("r1", "pulse_basics")
    assert st.size_mb("r1", "pulse_basics") == pytest.approx(
        N_PULSES * st.data_itemsize("pulse_basics") / 1e6)
    table = st.available_for_run("r1", exclude_targets="*_pulses*")
    assert dict(zip(table["target"], table["is_stored"])) == {
        "pulses": True, "pulse_basics": True, "cut_big_pulse": False, "windows": False,
        "window_summary": False, "pulse_info": False, "large_pulse_neighbours": False}
    assert sorted(st.available_for_run("r1", include_targets=["pulse*"])["target"]) == [
        "pulse_basics", "pulse_info", "pulses"]
    assert st.stored_dependencies("r1", "large_pulses") == {
        "large_pulses": False, "pulse_basics": True}
    assert st.get_source("r1", "large_pulses") == {"pulse_basics"}
    st2 = st.new_context(forbid_creation_of=("pulse_basics",))
    with pytest.raises(strax.DataNotAvailable, match="forbid"):
        st2.stored_dependencies("r2", "large_pulses")
    assert st.get_source_sf("r1", "pulse_basics") == st.storage
    assert st.writable_storage() == st.storage


def test_copy_to_frontend_recompresses(st, tmp_path):
    second = strax.DataDirectory(str(tmp_path / "second"))
    st.storage.append(second)
    st.make("r1", "pulse_basics")
    st.copy_to_frontend("r1", "pulse_basics", target_frontend_id=1, target_compressor="zlib"
                        if "zlib" in strax.storage.available_codecs() else None)
    only_second = Context(storage=[second], register=[ssp.Pulses, ssp.PulseBasics])
    assert only_second.is_stored("r1", "pulse_basics")
    np.testing.assert_array_equal(only_second.get_array("r1", "pulse_basics"),
                                  st.get_array("r1", "pulse_basics"))
    with pytest.raises(strax.DataExistsError):
        st.copy_to_frontend("r1", "pulse_basics", target_frontend_id=1)
    with pytest.raises(strax.DataNotAvailable):
        st.copy_to_frontend("r2", "pulse_basics")


# ---------------------------------------------------------------------- run metadata & runs
def test_run_metadata(st):
    with pytest.raises(RunMetadataNotAvailable):
        st.run_metadata("r1")
    write_run_doc(st, "r1", 10, tags=("calibration",), daq={"rate": 5})
    md = st.run_metadata("r1")
    assert md["name"] == "r1" and md["mode"] == "tpc" and md["daq.rate"] == 5
    assert md["start"].year == 2024 and md["start"].tzinfo is None
    assert set(st.run_metadata("r1", projection=["start", "mode"])) == {"start", "mode"}
    # strax (bson) writes dates as {"$date": milliseconds}
    path = os.path.join(st.storage[0].path, "r2-metadata.json")
    with open(path, "w") as f:
        json.dump({"name": "r2", "start": {"$date": 1_700_000_000_000},
                   "end": {"$date": 1_700_000_003_000}}, f)
    assert st.estimate_run_start_and_end("r2") == (1_700_000_000 * SECOND,
                                                   1_700_000_003 * SECOND)


def test_to_absolute_time_range(st):
    write_run_doc(st, "r1", 10)
    t0 = st.estimate_run_start_and_end("r1")[0]
    assert st.to_absolute_time_range("r1", time_range=(1.0, 2.0)) == (1, 2)
    assert st.to_absolute_time_range("r1", seconds_range=(1, 2)) == (t0 + SECOND,
                                                                     t0 + 2 * SECOND)
    event = st.get_array("r1", "pulse_basics")[3]
    assert st.to_absolute_time_range("r1", time_within=event) == (event["time"],
                                                                  event["endtime"])
    assert st.to_absolute_time_range("r1", full_range=True) == (t0, t0 + 5 * SECOND)
    assert st.to_absolute_time_range("r1") is None
    with pytest.raises(strax.InvalidConfiguration, match="at most one"):
        st.to_absolute_time_range("r1", time_range=(0, 1), seconds_range=(0, 1))
    # No run document: estimated from stored data, floored to seconds
    st.make("r2", "pulses")
    assert st.estimate_run_start_and_end("r2", "pulse_basics") == (0, 0)
    with pytest.warns(UserWarning, match="assuming 0 and inf"):
        assert st.estimate_run_start_and_end("r3") == (0, float("inf"))


def test_scan_select_and_list_available(st):
    write_run_doc(st, "000001", 1, tags=("_calibration", "good"), mode="kr83m")
    write_run_doc(st, "000002", 2, tags=("blinded",), mode="background")
    write_run_doc(st, "000003", 3, tags=("blinded", "messy"), mode="background")
    st.make("000001", "pulse_basics")
    st.make("000003", "pulse_basics")
    st.make("no_doc", "pulse_basics")
    runs = st.scan_runs()
    assert runs["name"].tolist() == ["000001", "000002", "000003"]
    assert runs["number"].tolist() == [1, 2, 3]
    assert runs["tags"].tolist() == ["_calibration,good", "blinded", "blinded,messy"]
    assert st.list_available("pulse_basics") == ["000001", "000003"]
    assert st.list_available("pulse_basics", runs=["no_doc", "000002"]) == ["no_doc"]
    assert st.list_available("pulse_basics", config=dict(gain=2.0)) == []
    sel = st.select_runs(include_tags="blinded", exclude_tags="messy")
    assert sel["name"].tolist() == ["000002"]
    assert st.select_runs(include_tags="calibration")["name"].tolist() == ["000001"]
    assert st.select_runs(include_tags="calibration", ignore_underscore=False).empty
    assert st.select_runs(run_mode="back*")["name"].tolist() == ["000002", "000003"]
    assert st.select_runs(run_id="00000[12]")["name"].tolist() == ["000001", "000002"]
    assert st.select_runs(run_id=r"0+3$", pattern_type="re")["name"].tolist() == ["000003"]
    avail = st.select_runs(available="pulse_basics")
    assert avail["name"].tolist() == ["000001", "000003"]
    assert avail["pulse_basics_available"].all()
    runs = st.scan_runs(check_available=["pulse_basics"])
    assert runs["pulse_basics_available"].tolist() == [True, False, True]


def test_deep_scan_finds_runs_without_documents(tmp_path):
    st = Context(storage=[strax.DataDirectory(str(tmp_path), deep_scan=True)])
    st.register_all(ssp)
    st.make("a1", "pulses")
    assert st.scan_runs()["name"].tolist() == ["a1"]
    assert st.scan_runs()["number"].tolist() == [None]  # not a number: strax would fail here


def test_define_run_joins_runs_in_time_order(st):
    write_run_doc(st, "r1", 20, tags=("a",))
    write_run_doc(st, "r2", 10, tags=("b",))
    name = st.define_run("both", ["r1", "r2"])
    assert name == "_both"
    assert list(st.superrun_spec("_both")) == ["r2", "r1"]  # sorted by start
    doc = st.run_metadata("_both")
    assert doc["sub_run_spec"] == {"r1": "all", "r2": "all"}
    assert doc["livetime"] == 10 and sorted(t["name"] for t in doc["tags"]) == ["a", "b"]
    joined = st.get_superrun_array("_both", "pulse_basics", config=dict(pulse_seed=1))
    assert len(joined) == 2 * N_PULSES and (np.diff(joined["time"]) >= 0).all()
    # Another context on the same storage knows the superrun from its run document
    st2 = Context(storage=st.storage, register=[ssp.Pulses, ssp.PulseBasics])
    assert st2.superrun_spec("_both") == {"r2": "all", "r1": "all"}
    # Time ranges of items of one run
    items = st.get_array("r1", "pulse_basics")[:5]
    st.define_run("_five", items, from_run="r1")
    np.testing.assert_array_equal(st.get_superrun_array("_five", "pulse_basics"), items)
    with pytest.raises(strax.DataNotAvailable, match="define_run"):
        st.superrun_spec("_undefined")
    only_area = st.get_array("_five", "pulse_basics", keep_columns=["area"])
    assert only_area.dtype.names == ("area",)
    np.testing.assert_array_equal(only_area["area"], items["area"])
    with pytest.raises(strax.InvalidConfiguration, match="would contain itself"):
        st.define_run("_loop", ["_loop"])
    st.define_run("_outer", ["_five"])
    with pytest.raises(strax.InvalidConfiguration, match="would contain itself"):
        st.define_run("_five", ["_outer"])
    # nothing is made or saved under a superrun's name: its data is its runs'
    with pytest.raises(strax.InvalidConfiguration, match="is a superrun"):
        st.make("_five", "pulse_basics", save="pulse_basics")
    assert not st.is_stored("_five", "pulse_basics")


def test_many_runs_with_run_id_field(st):
    arr = st.get_array_runs(["r2", "r1"], "pulse_basics", config=dict(gain=1.0))
    assert arr.dtype.names[0] == "run_id" and len(arr) == 2 * N_PULSES
    assert arr["run_id"][0] == "r1" and arr["run_id"][-1] == "r2"
    as_bytes = st.get_array_runs(["r1"], "pulse_basics", run_id_as_bytes=True)
    assert as_bytes["run_id"][0] == b"r1"
    bare = st.get_array_runs(["r1", "r2"], "pulses", add_run_id_field=False)
    assert "run_id" not in bare.dtype.names


# ---------------------------------------------------------------------- reductions
def test_accumulate(st):
    acc = st.accumulate("r1", "pulse_basics")  # computed: the source's 4 chunks
    assert acc["n_rows"] == N_PULSES and acc["n_chunks"] == 4
    full = st.get_array("r1", "pulse_basics")  # loaded: saved as one (rechunked) chunk
    assert st.accumulate("r1", "pulse_basics")["n_chunks"] == 1
    assert acc["start"] == 0 and acc["end"] == 4 * ssp.CHUNK_NS
    assert acc["area"] == pytest.approx(full["area"].sum())
    assert acc["channel"] == full["channel"].sum()
    only_area = st.accumulate("r1", "pulse_basics", fields="area")
    assert only_area["channel"] == full["channel"][0]  # store_first_for_others
    counted = st.accumulate("r1", "pulse_basics", function=lambda d: len(d))
    assert counted["result"] == N_PULSES
    big = st.accumulate("r1", "pulse_basics", fields="area", selection="area > 20")
    assert big["n_rows"] == (full["area"] > 20).sum()
    assert big["area"] == pytest.approx(full["area"][full["area"] > 20].sum())
    with_fields = st.accumulate(
        "r1", "pulse_basics", fields=["area"], function_takes_fields=True,
        function=lambda d, fields: {f: d[f] * 2 for f in fields})
    assert with_fields["area"] == pytest.approx(2 * full["area"].sum())


# ---------------------------------------------------------------------- request arguments
def test_apply_request_selection():
    data = np.zeros(6, dtype=[(("Start", "time"), np.int64), ("endtime", np.int64),
                              (("Area [PE]", "area"), np.float64), ("channel", np.int16)])
    data["area"] = [1, 5, 10, 50, 100, 500]
    data["channel"] = [0, 1, 0, 1, 0, 1]
    pick = apply_request_selection
    assert pick(data, "area > 20")["area"].tolist() == [50, 100, 500]
    assert pick(data, ["area > 2", "channel == 1"])["area"].tolist() == [5, 50, 500]
    assert pick(data, "(area > 2) & ~(channel == 1)")["area"].tolist() == [10, 100]
    assert pick(data, "5 <= area < 100")["area"].tolist() == [5, 10, 50]
    assert pick(data, "log10(area) >= 2 or channel * 2 == 0")["area"].tolist() == [
        1, 10, 100, 500]
    assert pick(data, lambda d: d["area"] < 6)["area"].tolist() == [1, 5]
    for nothing in ("", [], ()):  # strax: ``if selection:``
        assert len(pick(data, nothing)) == 6
    # & | ^ ~ are bitwise on integers, as in numexpr: bit-mask cuts select the right items
    data["channel"] = [0, 1, 2, 3, 6, 7]
    assert pick(data, "(channel & 2) != 0")["channel"].tolist() == [2, 3, 6, 7]
    assert pick(data, "(channel & 2) == 2")["channel"].tolist() == [2, 3, 6, 7]
    assert pick(data, "(channel | 1) == 3")["channel"].tolist() == [2, 3]
    assert pick(data, "(channel ^ 1) == 0")["channel"].tolist() == [1]
    assert pick(data, "(~channel & 1) == 1")["channel"].tolist() == [0, 2, 6]
    assert pick(data, "(area > 20) ^ (channel > 5)")["area"].tolist() == [50]
    with pytest.raises(strax.InvalidConfiguration, match="parentheses"):
        pick(data, "area > 100 & channel == 1")  # numexpr refuses this precedence trap too
    with pytest.raises(strax.InvalidConfiguration, match="booleans or integers"):
        pick(data, "(area & 1) == 0")
    data["channel"] = [0, 1, 0, 1, 0, 1]
    kept = pick(data, keep_columns=["area", "time"])
    assert kept.dtype.names == ("time", "area") and kept.dtype.fields["area"][2] == "Area [PE]"
    assert pick(data, drop_columns="channel").dtype.names == ("time", "endtime", "area")
    with pytest.raises(strax.InvalidConfiguration, match="not both"):
        pick(data, keep_columns="area", drop_columns="time")
    with pytest.raises(strax.InvalidConfiguration, match="not fields"):
        pick(data, keep_columns="aera")
    with pytest.raises(strax.InvalidConfiguration, match="'aera' is not a field"):
        pick(data, "aera > 1")
    for evil in ("__import__('os').system('true')", "area.__class__", "open('x')",
                 "[x for x in area]"):
        with pytest.raises(strax.InvalidConfiguration):
            pick(data, evil)


def test_add_run_id_field():
    data = np.zeros(3, dtype=[("time", np.int64), ("endtime", np.int64)])
    out = add_run_id_field(data, "012345")
    assert out.dtype.names == ("run_id", "time", "endtime")
    assert out["run_id"].tolist() == ["012345"] * 3
    assert add_run_id_field(data, "7", dtype="S6")["run_id"][0] == b"7"
    with pytest.raises(strax.InvalidConfiguration):
        add_run_id_field(out, "x")


def test_apply_data_function(st):
    seen = []

    def double(data, run_id, targets):
        seen.append((run_id, targets))
        return data

    st.set_context_config(dict(apply_data_function=double))
    data = st.get_array("r1", "pulses")
    if issubclass(asyncstrax.Context, StraxContextMethods):  # wired: get_array applies it
        assert seen == [("r1", "pulses")] * 4  # once per chunk, as strax
    seen.clear()
    assert st.apply_data_functions(data, "r1", "pulses") is data
    assert seen == [("r1", "pulses")]


# ---------------------------------------------------------------------- options as strax's
def _per_run_context():
    @strax.takes_config(strax.Option("thr", default_by_run=[(0, 1.0), (1000, 2.0)],
                                     help="per-run default"))
    class PerRun(ssp.PulseBasics):
        provides = "pulse_basics"

    return Context(register=[ssp.Pulses, PerRun])


def test_default_by_run_string_run_ids_in_order():
    st = _per_run_context()
    assert st.get_single_plugin("000500", "pulse_basics").config["thr"] == 1.0
    assert st.get_single_plugin("1500", "pulse_basics").config["thr"] == 2.0



def test_default_by_run_compares_run_numbers():
    st = _per_run_context()
    assert st.get_single_plugin("001500", "pulse_basics").config["thr"] == 2.0
    assert st.get_single_plugin("500", "pulse_basics").config["thr"] == 1.0
    keys = st.keys_for_runs("pulse_basics", ["000500", "001500"])
    assert keys[0].lineage_hash != keys[1].lineage_hash


def test_track_false_and_infer_type(st):
    key = st.key_for("r1", "pulses")
    opt = strax.Option("window", default=10.0, infer_type=True, track=False)
    assert opt.track is False and opt.default == 10.0
    assert st.key_for("r1", "pulses") == key
    with pytest.raises(strax.InvalidConfiguration, match="must be of type"):
        strax.Option("n", default=3, infer_type=True).validate({"n": "three"})



def test_numpy_scalars_pass_number_options():
    strax.Option("n", default=3, infer_type=True).validate({"n": np.int64(3)})
    strax.Option("g", type=float, default=1.0).validate({"g": np.float32(2.0)})
    strax.Option("t", type=tuple, default=()).validate({"t": [1, 2]})  # from JSON



def test_child_option_needs_its_parent_name():
    with pytest.raises(strax.InvalidConfiguration, match="parent_option_name"):
        strax.Option("x", default=1, child_option=True)



def test_child_plugin_overrides_parent_option_as_in_strax():
    class Parent(ssp.PulseBasics):
        provides = "parent_basics"
        __version__ = "1.0.0"

    class Child(Parent):
        provides = "child_basics"
        child_plugin = True
        __version__ = "0.0.1"
        gain_child = strax.Config(default=3.0, type=float, child_option=True,
                                  parent_option_name="gain", help="gain of the child")

    st = Context(register=[ssp.Pulses, Parent, Child])
    np.testing.assert_allclose(st.get_array("r1", "child_basics")["area"],
                               3 * st.get_array("r1", "parent_basics")["area"])
    assert st.lineage("r1", "child_basics")["child_basics"] == (
        "Child", "0.0.1", {"gain_child": 3.0, "Parent": "1.0.0"})


def test_apply_selection_as_strax():
    from asyncstrax.query import apply_selection

    data = np.zeros(4, dtype=[("time", np.int64), ("endtime", np.int64), ("area", np.float64)])
    data["time"] = [30, 0, 10, 20]
    data["endtime"] = data["time"] + 10
    data["area"] = [1, 2, 3, 4]
    out = apply_selection(data, "area > 1", time_range=(0, 25), time_selection="touching")
    assert out["time"].tolist() == [0, 10, 20]
    assert apply_selection(data, time_range=(0, 25))["time"].tolist() == [0, 10]


# ---------------------------------------------------------------------- once the Context is wired
wired = pytest.mark.skipif(
    not issubclass(asyncstrax.Context, StraxContextMethods),
    reason="the Context does not inherit StraxContextMethods yet")


@wired
def test_request_arguments_of_get_array(st):
    write_run_doc(st, "r1", 10)
    full = st.get_array("r1", "pulse_basics")
    big = st.get_array("r1", "pulse_basics", selection=["area > 20", "channel < 2"],
                       keep_columns=("time", "area"))
    mask = (full["area"] > 20) & (full["channel"] < 2)
    assert big.dtype.names == ("time", "area")
    np.testing.assert_array_equal(big["area"], full["area"][mask])
    df = st.get_df("r1", "pulse_basics", drop_columns="channel", selection="area > 1e9")
    assert list(df.columns) == ["time", "endtime", "area"] and len(df) == 0
    item = full[10]
    within = st.get_array("r1", "pulses", time_within=item)
    assert len(within) >= 1 and (within["time"] >= item["time"]).all()


@wired
def test_get_array_of_several_runs_and_superruns(st):
    arr = st.get_array(["r2", "r1"], "pulse_basics")
    assert arr["run_id"].tolist() == ["r1"] * N_PULSES + ["r2"] * N_PULSES
    st.make(["r1", "r2"], "pulses")
    assert st.is_stored("r2", "pulses")
    st.define_run("_pair", ["r1", "r2"])
    assert len(st.get_array("_pair", "pulse_basics")) == 2 * N_PULSES


@wired
def test_context_takes_a_path_as_storage(tmp_path):
    st = asyncstrax.Context(storage=str(tmp_path), register=[ssp.Pulses])
    st.make("r1", "pulses")
    assert os.path.isdir(str(tmp_path)) and st.list_available("pulses", runs=["r1"]) == ["r1"]


def test_forbid_creation_of_refuses_to_compute(st):
    st.make("r1", "pulses")
    forbidding = st.new_context(forbid_creation_of=("pulse_basics",))
    with pytest.raises(strax.DataNotAvailable, match="forbids creating") as info:
        forbidding.get_array("r1", "large_pulses")
    assert info.value.data_type == "pulse_basics" and "PulseBasics" in str(info.value)
    assert not st.is_stored("r1", "pulse_basics")  # nothing was made or saved
    st.make("r1", "pulse_basics")
    assert len(forbidding.get_array("r1", "large_pulses"))  # loaded, not made: allowed
    forbidding.set_context_config({"forbid_creation_of": "pulses"})
    with pytest.raises(strax.DataNotAvailable, match="forbids creating"):
        forbidding.get_array("r2", "pulses")


def test_is_stored_with_other_options_and_several_targets(st):
    st.make("r1", "pulse_basics")
    assert st.is_stored("r1", "pulse_basics")
    assert not st.is_stored("r1", "pulse_basics", config=dict(gain=7.0))  # another lineage
    assert st.is_stored("r1", ["pulses", "pulse_basics"])
    assert not st.is_stored("r1", ["pulses", "large_pulses"])


def test_multi_output_plugin_with_only_some_outputs_stored(st):
    fields = strax.time_fields + [(("Area", "area"), np.float64)]

    class TwoAreas(strax.Plugin):
        __version__ = "0.0.1"
        depends_on = "pulse_basics"
        provides = ("area_kept", "area_not_kept")
        data_kind = dict(area_kept="pulses", area_not_kept="pulses")
        dtype = dict(area_kept=fields, area_not_kept=fields)
        save_when = dict(area_kept=strax.SaveWhen.ALWAYS, area_not_kept=strax.SaveWhen.NEVER)

        def compute(self, pulses):
            return {dt: dict(time=pulses["time"], endtime=pulses["endtime"],
                             area=sign * pulses["area"])
                    for dt, sign in (("area_kept", 1), ("area_not_kept", -1))}

    st.register(TwoAreas)
    first = st.get_array("r1", ["area_kept", "area_not_kept"])
    assert st.is_stored("r1", "area_kept") and not st.is_stored("r1", "area_not_kept")
    saved = st.get_metadata("r1", "area_kept")
    # Asking for both again computes the plugin (one output is not stored): the stored one
    # comes from that computation, not also from its loader, and is not saved over.
    again = st.get_array("r1", ["pulses", "area_kept", "area_not_kept"])
    np.testing.assert_array_equal(again["area"], first["area"])
    assert st.get_metadata("r1", "area_kept") == saved
    np.testing.assert_array_equal(st.get_array("r1", "area_kept")["area"],
                                  -st.get_array("r1", "area_not_kept")["area"])


def test_register_all_as_a_context_argument():
    st = Context(register_all=ssp)
    assert "pulse_info" in st._plugin_class_registry


def test_saving_what_a_plugin_never_saves_is_refused(st):
    class NeverSaved(ssp.PulseBasics):
        save_when = strax.SaveWhen.NEVER

    st.register(NeverSaved)
    with pytest.raises(strax.InvalidConfiguration, match="never lets it be saved"):
        st.make("r1", "pulse_basics", save="pulse_basics")
    st.make("r1", "pulse_basics")
    assert not st.is_stored("r1", "pulse_basics")
