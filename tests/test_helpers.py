"""strax's array and dtype helpers under their strax names, giving strax's results."""

import numpy as np
import pytest

import asyncstrax as strax

TITLED = strax.time_fields + [(("Area [PE]", "area"), np.float32)]


def test_dtype_helpers_round_trip_titles():
    dtype = np.dtype(TITLED)
    assert np.dtype(strax.unpack_dtype(dtype)) == dtype
    plain = strax.remove_titles_from_dtype(dtype)
    assert plain.names == dtype.names and all(
        len(plain.fields[n]) == 2 for n in plain.names)
    merged = strax.merged_dtype([dtype, np.dtype([("area", np.float64), ("n", np.int16)])])
    assert isinstance(merged, list)  # strax gives a field list
    assert np.dtype(merged).names == ("time", "endtime", "area", "n")
    assert np.dtype(merged)["area"] == np.float32  # the first field of a name wins


def test_merge_arrs_later_arrays_win_and_lengths_must_match():
    a = np.zeros(3, dtype=TITLED)
    a["area"] = 1
    b = np.zeros(3, dtype=[("area", np.float32), ("n", np.int16)])
    b["area"], b["n"] = 2, 5
    out = strax.merge_arrs([a, b])
    assert out["area"].tolist() == [2, 2, 2] and out["n"].tolist() == [5, 5, 5]
    assert strax.merge_arrs([a]) is a
    with pytest.raises(ValueError, match="same length"):
        strax.merge_arrs([a, b[:2]])


def test_small_helpers():
    assert strax.to_str_tuple("peaks") == ("peaks",)
    assert strax.to_str_tuple(["a", "b"]) == ("a", "b")
    assert strax.to_str_tuple(np.array(["a"])) == ("a",)
    with pytest.raises(TypeError):
        strax.to_str_tuple(3)
    # strax's names: a run of capitals is one word
    assert strax.camel_to_snake("PeakBasics") == "peak_basics"
    assert strax.camel_to_snake("PeaksHE") == "peaks_he"
    assert strax.camel_to_snake("S1AreaFraction") == "s1_area_fraction"
    rec = strax.dict_to_rec({"time": [1, 2], "x": [0.5, 1.5]})
    assert rec.dtype.names == ("time", "x") and rec["x"].tolist() == [0.5, 1.5]
    assert strax.stable_argsort(np.array([2, 1, 2, 1])).tolist() == [1, 3, 0, 2]
    with pytest.raises(ValueError, match="not stable"):
        strax.stable_sort(np.arange(3), kind="quicksort")


def test_default_provides_follows_strax_names():
    class PeaksHE(strax.Plugin):
        depends_on = ()
        dtype = strax.time_fields

    assert PeaksHE().provides == ("peaks_he",)


def test_containment_helpers_and_sort_by_time():
    things = np.zeros(4, dtype=strax.time_fields)
    things["time"] = [0, 10, 20, 50]
    things["endtime"] = things["time"] + 5
    containers = np.zeros(2, dtype=strax.time_fields)
    containers["time"], containers["endtime"] = [0, 18], [16, 40]
    assert strax.fully_contained_in(things, containers).tolist() == [0, 0, 1, -1]
    groups = [g["time"].tolist() for g in strax.split_by_containment(things, containers)]
    assert groups == [[0, 10], [20]]
    assert strax.touching_windows(things, containers).tolist() == [[0, 2], [2, 3]]
    shuffled = things[[2, 0, 3, 1]]
    np.testing.assert_array_equal(strax.sort_by_time(shuffled), things)
