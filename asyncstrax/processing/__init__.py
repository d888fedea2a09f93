"""numba kernels of the reference TPC chain (strax-compatible dtypes and conventions).

Every kernel is ``@numba.njit(nogil=True, cache=True)``; nothing is generated at run time, so a
new process loads them from numba's on-disk cache. Plain-Python wrappers allocate outputs.
"""

from asyncstrax.processing.baseline import baseline, raw_to_records, record_length_from_dtype
from asyncstrax.processing.chain import (
    DEFAULT_CONFIG,
    chain_config,
    process_chunk_plain,
    process_peaks,
    process_records,
)
from asyncstrax.processing.classify import classify_peaks, peak_basics
from asyncstrax.processing.events import build_events, event_basics, find_event_windows
from asyncstrax.processing.hitfinder import find_hits, sort_by_time
from asyncstrax.processing.peaks import (
    build_peaks,
    compute_widths,
    find_peak_ranges,
    find_peaks,
    index_of_fraction,
    store_downsampled_waveform,
    sum_waveform,
    time_order,
    width_fractions,
)
from asyncstrax.processing.records import (
    NO_RECORD_LINK,
    cut_outside_hits,
    integrate,
    record_links,
    zero_out_of_bounds,
)

__all__ = [
    "baseline", "raw_to_records", "record_length_from_dtype",
    "NO_RECORD_LINK", "cut_outside_hits", "integrate", "record_links", "zero_out_of_bounds",
    "find_hits", "sort_by_time",
    "build_peaks", "compute_widths", "find_peak_ranges", "find_peaks", "index_of_fraction",
    "store_downsampled_waveform", "sum_waveform", "time_order", "width_fractions",
    "classify_peaks", "peak_basics",
    "build_events", "event_basics", "find_event_windows",
    "DEFAULT_CONFIG", "chain_config", "process_chunk_plain", "process_peaks", "process_records",
]
