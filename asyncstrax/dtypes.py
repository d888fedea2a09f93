"""Fundamental dtypes, interchangeable with strax 2.2.3.

Field names, order, numpy types and titles of ``raw_record_dtype``, ``record_dtype``,
``hit_dtype`` and ``peak_dtype`` are the same as strax's, so arrays saved by one framework load in
the other. The higher-level dtypes of the reference TPC chain (``peak_basics``, ``events``,
``event_basics``) are our own, strax/straxen-like.

Dtypes are given as lists of ``((title, name), type[, shape])`` tuples, as strax does; wrap them in
``np.dtype(...)`` to get a numpy dtype. This module imports numpy only (no numba) so it is fast to
import.

Caveat (inherited from strax): numba caches compiled kernels keyed on the dtype, titles included;
changing a title invalidates the cache entries of the kernels that use it.
"""

from typing import Any

import numpy as np

__all__ = [
    "DIGITAL_SUM_WAVEFORM_CHANNEL",
    "DEFAULT_RECORD_LENGTH",
    "time_fields",
    "time_dt_fields",
    "interval_dtype",
    "peak_interval_dtype",
    "raw_record_dtype",
    "record_dtype",
    "hit_dtype",
    "peak_dtype",
    "peak_basics_dtype",
    "event_dtype",
    "event_basics_dtype",
    "PEAK_TYPE_UNKNOWN",
    "PEAK_TYPE_S1",
    "PEAK_TYPE_S2",
]

#: Channel number stored in peaks (summed over all channels).
DIGITAL_SUM_WAVEFORM_CHANNEL = -1
#: Samples per record in strax's default raw_records.
DEFAULT_RECORD_LENGTH = 110

#: Values of the ``type`` field of peaks / peak_basics.
PEAK_TYPE_UNKNOWN = 0
PEAK_TYPE_S1 = 1
PEAK_TYPE_S2 = 2

_TIME = ("Start time since unix epoch [ns]", "time")
_ENDTIME = ("Exclusive end time since unix epoch [ns]", "endtime")

time_fields = [
    (_TIME, np.int64),
    (_ENDTIME, np.int64),
]

time_dt_fields = [
    (_TIME, np.int64),
    (("Length of the interval in samples", "length"), np.int32),
    (("Width of one sample [ns]", "dt"), np.int16),
]

#: Base of pulse-like and hit-like intervals.
interval_dtype = time_dt_fields + [(("Channel/PMT number", "channel"), np.int16)]

#: As interval_dtype but with an int32 dt, so peaks can be downsampled a lot.
peak_interval_dtype = list(interval_dtype)
peak_interval_dtype[2] = (("Width of one sample [ns]", "dt"), np.int32)


def raw_record_dtype(samples_per_record: int = DEFAULT_RECORD_LENGTH) -> list[tuple[Any, ...]]:
    """Dtype of digitizer raw records (one fragment of a pulse, strax layout).

    ``length`` may be shorter than the data field: the record is then zero-padded at the end.
    ``samples_per_record`` is the size of the data field. Returns a list of field tuples, as
    strax does; wrap it in ``np.dtype`` for a numpy dtype.
    """
    return interval_dtype + [
        (
            ("Length of pulse to which the record belongs (without zero-padding)", "pulse_length"),
            np.int32,
        ),
        (("Fragment number in the pulse", "record_i"), np.int16),
        (("Baseline determined by the digitizer (if this is supported)", "baseline"), np.int16),
        (("Waveform data in raw ADC counts", "data"), np.int16, samples_per_record),
    ]


def record_dtype(samples_per_record: int = DEFAULT_RECORD_LENGTH) -> list[tuple[Any, ...]]:
    """Dtype of baselined (and flipped) records: data = int(baseline) - raw ADC.

    ``samples_per_record`` is the size of the data field; returns a list of field tuples.
    """
    return interval_dtype + [
        (
            ("Length of pulse to which the record belongs (without zero-padding)", "pulse_length"),
            np.int32,
        ),
        (("Fragment number in the pulse", "record_i"), np.int16),
        (("Integral in ADC counts x samples", "area"), np.int32),
        (
            ("Level of data reduction applied (strax.ReductionLevel enum)", "reduction_level"),
            np.uint8,
        ),
        (("Baseline in ADC counts. data = int(baseline) - data_orig", "baseline"), np.float32),
        (("Baseline RMS in ADC counts. data = baseline - data_orig", "baseline_rms"), np.float32),
        (
            ("Multiply data by 2**(this number). Baseline is unaffected.", "amplitude_bit_shift"),
            np.int16,
        ),
        (
            ("Waveform data in raw counts above integer part of baseline", "data"),
            np.int16,
            samples_per_record,
        ),
    ]


#: A hit: an interval of one record above threshold.
hit_dtype = interval_dtype + [
    (("Integral [ADC x samples]", "area"), np.float32),
    (("Index of sample in record in which hit starts", "left"), np.int16),
    (("Index of first sample in record just beyond hit (exclusive bound)", "right"), np.int16),
    (
        ("For lone hits, index of sample in record where integration starts", "left_integration"),
        np.int16,
    ),
    (
        ("For lone hits, index of first sample beyond integration region", "right_integration"),
        np.int16,
    ),
    (("Internal (temporary) index of fragment in which hit was found", "record_i"), np.int32),
    (("ADC threshold applied in order to find hits", "threshold"), np.float32),
    (("Maximum amplitude above baseline [ADC counts]", "height"), np.float32),
    (("Time when hit reach maximum amplitude [ns]", "max_time"), np.int64),
]


def peak_dtype(
    n_channels: int = 100,
    n_sum_wv_samples: int = 200,
    n_widths: int = 11,
    hits_timing: bool = True,
    store_data_top: bool = True,
    store_data_start: bool = True,
) -> list[tuple[Any, ...]]:
    """Dtype of peaks: intervals summed over all channels (channel = -1).

    ``n_channels`` sizes the per-channel fields, ``n_sum_wv_samples`` the waveform fields and
    ``n_widths`` the width fields. ``hits_timing`` adds the hit-apex fields (``max_diff``,
    ``min_diff``, ``first_channel``, ``last_channel``); ``store_data_top`` and
    ``store_data_start`` add the ``data_top`` and ``data_start`` waveforms, next to ``data``
    where strax puts them. Returns a list of field tuples. One channel raises ``ValueError``: a
    shape-1 field would not keep its shape.
    """
    if n_channels == 1:
        # A shape-1 subarray field would silently change shape; strax refuses it too.
        raise ValueError("Must have more than one channel")
    dtype: list[tuple[Any, ...]] = peak_interval_dtype + [
        (("Classification of the peak(let)", "type"), np.int8),
        (("Integral across channels [PE]", "area"), np.float32),
        (("Fraction of area seen by the top array", "area_fraction_top"), np.float32),
        (("Integral per channel [PE]", "area_per_channel"), np.float32, n_channels),
        (("Number of hits contributing at least one sample to the peak ", "n_hits"), np.int32),
        (("Waveform data in PE/sample (not PE/ns!)", "data"), np.float32, n_sum_wv_samples),
        (("Weighted average center time of the peak [ns]", "center_time"), np.int64),
        (("Weighted relative median time of the peak [ns]", "median_time"), np.float32),
        (("Peak widths in range of central area fraction [ns]", "width"), np.float32, n_widths),
        (
            ("Peak widths: time between nth and 5th area decile [ns]", "area_decile_from_midpoint"),
            np.float32,
            n_widths,
        ),
        (("Does the channel reach ADC saturation?", "saturated_channel"), np.int8, n_channels),
        (("Total number of saturated channels", "n_saturated_channels"), np.int16),
        (("Channel within tight range of mean", "tight_coincidence"), np.int16),
        (("Largest gap between hits inside peak [ns]", "max_gap"), np.int32),
        (("Maximum interior goodness of split", "max_goodness_of_split"), np.float32),
    ]
    if hits_timing:
        dtype += [
            (
                ("Largest time difference between apexes of hits inside peak [ns]", "max_diff"),
                np.int32,
            ),
            (
                ("Smallest time difference between apexes of hits inside peak [ns]", "min_diff"),
                np.int32,
            ),
            (
                (
                    "First channel/PMT number inside peak (sorted by apexes of hits)",
                    "first_channel",
                ),
                np.int16,
            ),
            (
                ("Last channel/PMT number inside peak (sorted by apexes of hits)", "last_channel"),
                np.int16,
            ),
        ]
    if store_data_top:
        dtype.insert(
            9,
            (
                ("Waveform data in PE/sample (not PE/ns!), top array", "data_top"),
                np.float32,
                n_sum_wv_samples,
            ),
        )
    if store_data_start:
        dtype.insert(
            10,
            (
                (
                    "Waveform data in PE/sample (not PE/ns!), starting not downsampled samples",
                    "data_start",
                ),
                np.float32,
                n_sum_wv_samples,
            ),
        )
    return dtype


#: Per-peak summary of the reference TPC chain (straxen-like names).
peak_basics_dtype = time_fields + [
    (("Weighted center time of the peak [ns]", "center_time"), np.int64),
    (("Peak integral in PE", "area"), np.float32),
    (("Number of hits contributing at least one sample to the peak", "n_hits"), np.int32),
    (("Number of PMTs contributing to the peak", "n_channels"), np.int16),
    (("PMT number which contributes the most PE", "max_pmt"), np.int16),
    (("Area of signal in the largest-contributing PMT (PE)", "max_pmt_area"), np.float32),
    (("Width (in ns) of the central 50% area of the peak", "range_50p_area"), np.float32),
    (("Width (in ns) of the central 90% area of the peak", "range_90p_area"), np.float32),
    (("Fraction of area seen by the top array", "area_fraction_top"), np.float32),
    (("Time between 10% and 50% area quantiles [ns]", "rise_time"), np.float32),
    (("Classification of the peak (0 unknown, 1 S1, 2 S2)", "type"), np.int8),
]

#: Event windows.
event_dtype = time_fields + [
    (("Event number in this dataset", "event_number"), np.int64),
]

#: Main / alternative S1 and S2 of each event (straxen-like names).
event_basics_dtype = time_fields + [
    (("Number of peaks in the event", "n_peaks"), np.int32),
    (("Drift time between main S1 and S2 (center times) [ns]", "drift_time"), np.int64),
    (("Main S1 peak index in event", "s1_index"), np.int32),
    (("Main S2 peak index in event", "s2_index"), np.int32),
    (("Alternate S1 peak index in event", "alt_s1_index"), np.int32),
    (("Alternate S2 peak index in event", "alt_s2_index"), np.int32),
    (("Main S1 area [PE]", "s1_area"), np.float32),
    (("Main S2 area [PE]", "s2_area"), np.float32),
    (("Alternate S1 area [PE]", "alt_s1_area"), np.float32),
    (("Alternate S2 area [PE]", "alt_s2_area"), np.float32),
    (("Main S1 start time since unix epoch [ns]", "s1_time"), np.int64),
    (("Main S2 start time since unix epoch [ns]", "s2_time"), np.int64),
    (("Main S1 weighted center time since unix epoch [ns]", "s1_center_time"), np.int64),
    (("Main S2 weighted center time since unix epoch [ns]", "s2_center_time"), np.int64),
    (("Main S1 count of contributing PMTs", "s1_n_channels"), np.int16),
    (("Main S2 count of contributing PMTs", "s2_n_channels"), np.int16),
    (("Main S1 width, 50% area [ns]", "s1_range_50p_area"), np.float32),
    (("Main S2 width, 50% area [ns]", "s2_range_50p_area"), np.float32),
    (("Main S1 rise time, 10% to 50% area [ns]", "s1_rise_time"), np.float32),
    (("Main S2 rise time, 10% to 50% area [ns]", "s2_rise_time"), np.float32),
    (("Main S1 fraction of area seen by the top array", "s1_area_fraction_top"), np.float32),
    (("Main S2 fraction of area seen by the top array", "s2_area_fraction_top"), np.float32),
]
