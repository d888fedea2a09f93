"""The checksum of each chunk file: recorded in its metadata entry and checked on load.

Blosc, the default codec, would decompress a file with a flipped byte without noticing, and
strax records only each file's size. New files get an XXH3-64 (``"xxh3_64"``, 16 hex digits:
JSON readers outside Python lose integers above 2**53), which runs at ~9 GB/s here against
~2 GB/s for zlib's CRC-32 (``benchmarks/test_storage_speed.py`` measures the store with it).
Files written before carry a ``"crc32"``, still checked.
"""

from __future__ import annotations

import zlib
from typing import Any

__all__ = ["KEY", "checksum", "mismatch"]

#: the metadata key of the checksum new files get
KEY = "xxh3_64"


def checksum(blob: Any) -> str:
    """The checksum of a file's bytes, as recorded under ``KEY``."""
    import xxhash  # here: importing the storage (strax_chain.py imports our codecs) needs none

    return xxhash.xxh3_64_hexdigest(blob)


def mismatch(info: dict, blob: Any) -> str | None:
    """What is wrong when ``blob`` does not match the checksum its entry records (None when
    it matches or the entry records none, as strax's entries)."""
    expected = info.get(KEY)
    if expected is not None:
        if checksum(blob) != str(expected):
            return "fails its XXH3-64 check: its bytes changed after it was written"
        return None
    expected = info.get("crc32")
    if expected is not None and zlib.crc32(blob) != int(expected):
        return "fails its CRC-32 check: its bytes changed after it was written"
    return None
