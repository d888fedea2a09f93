"""The reference chain's parallel plugins in worker processes (importable, so workers can
unpickle them): for benchmarks/test_chain_scaling.py."""

from asyncstrax.tpc import plugins as tpc


class ProcessRecords(tpc.Records):
    parallel = "process"


class ProcessPeaks(tpc.Peaks):
    parallel = "process"


class ProcessPeakBasics(tpc.PeakBasics):
    parallel = "process"
