"""The public surface is exactly what __init__ declares, sorted, and importable."""

import asyncstrax


def test_all_is_sorted_and_complete():
    assert asyncstrax.__all__ == sorted(asyncstrax.__all__)
    for name in asyncstrax.__all__:
        assert hasattr(asyncstrax, name), name
    public = {n for n in vars(asyncstrax) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(asyncstrax, n)).__name__ == "module"}
    assert public - modules == set(asyncstrax.__all__)
