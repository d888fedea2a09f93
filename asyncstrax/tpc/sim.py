"""Synthetic dual-phase TPC and its pulse-only digitizer, deterministic from a seed.

Physics (deliberately simple, documented so the reference chain can be tuned on it):

- ``n_channels`` PMTs (default 248, XENON1T's count); channels ``< n_channels // 2`` are the top
  array. Each PMT has a gain (ADC x sample per PE) drawn once from ``detector_seed``, uniform in
  [0.8, 1.2] x 150; ``detector_to_pe(n_channels)`` gives the matching ``to_pe`` (1 / gain).
- Events arrive as a Poisson process at ``event_rate_hz``. At the interaction time t:
  S1 = ``s1_photons`` PE (uniform in the range, default 20-300), arrival times t +
  Exponential(25 ns),
  uniform over all channels. S2 = ``s2_photons`` PE (log-uniform, default 1000-10000) after a drift
  time uniform in [20 us, 200 us], Gaussian in time with sigma uniform in [1, 2] us (truncated at
  5 sigma); 60% of the S2 light goes to the top array in a blob of channels around a random
  centre, the rest uniformly to the bottom array.
- Dark counts: single PE at ``dark_rate_hz`` per channel.
- Each detected PE has an area factor ~ Normal(1, 0.25) (clipped at 0.1): its pulse area is
  gain x factor, with a fixed 8-sample single-PE shape (peak ~0.3 of the area, ~45 ADC at
  gain 150). Photon times are quantized to the 10 ns sample.
- Waveform = ``baseline_adc`` (16000) + Gaussian noise (``noise_adc``, 2.5 ADC; taken from a
  fixed table at a random offset per pulse, for speed) - signal, rounded, clipped to int16.

Digitizer: self-triggered per channel. Every PE crosses the trigger threshold (noise never does),
so a pulse is the union of [PE - 50 samples, PE + 8 + 50 samples) regions (pre/post-trigger
windows), i.e. what a zero-length-encoding digitizer with a threshold between noise and the
single-PE amplitude stores. Pulses are cut into strax-layout raw_records of 110 samples
(``record_i``, ``pulse_length``, zero padding at the end), dt = 10 ns, sorted by time
(ties by channel). The ``baseline`` field of raw_records is 0 (no digitizer baseline).

Chunks: a chunk covers ``chunk_duration_ns`` nominally, but its end is moved later until no
event's light (plus the pulse post-trigger window) crosses it and the next event starts at
least a pre-trigger window after it; dark counts whose pulse would cross a chunk edge are dropped
(a ~1 us dead window per chunk). So chunks are contiguous and no pulse crosses a chunk edge.

Truth per event (``TRUTH_DTYPE``): interaction time, S1 time, S1 area (sum of the PE area
factors, in PE) and photon count, S2 centre time, sigma, area, photon count, drift time.

Heavy loops are numba (``cache=True``); generation runs at several hundred MB/s of raw_records.
"""

import asyncio
import functools
import time as _time

import numba
import numpy as np

from asyncstrax.dtypes import DEFAULT_RECORD_LENGTH, raw_record_dtype

__all__ = [
    "Simulator",
    "TRUTH_DTYPE",
    "SPE_SHAPE",
    "DEFAULT_GAIN",
    "detector_gains",
    "detector_to_pe",
    "paced",
    "apaced",
]

#: Mean gain [ADC x sample per PE].
DEFAULT_GAIN = 150.0
#: Single-PE pulse shape (fraction of the area per sample); sums to 1.
SPE_SHAPE = np.array([0.05, 0.30, 0.25, 0.17, 0.11, 0.07, 0.04, 0.01], dtype=np.float64)

TRUTH_DTYPE = np.dtype(
    [
        ("event_number", np.int64),
        ("time", np.int64),
        ("endtime", np.int64),
        ("s1_time", np.int64),
        ("s1_area", np.float64),
        ("s1_n_photons", np.int64),
        ("s2_time", np.int64),
        ("s2_sigma", np.float64),
        ("s2_area", np.float64),
        ("s2_n_photons", np.int64),
        ("drift_time", np.int64),
        ("n_photons", np.int64),
    ]
)

_NOISE_TABLE_SIZE = 1 << 20
MB = 1e6


def detector_gains(n_channels=248, detector_seed=0, mean_gain=DEFAULT_GAIN):
    """Per-channel gains [ADC x sample per PE]: mean_gain x Uniform(0.8, 1.2), fixed by seed."""
    rng = np.random.default_rng([0x5EED, detector_seed])
    return mean_gain * rng.uniform(0.8, 1.2, n_channels)


def detector_to_pe(n_channels=248, detector_seed=0, mean_gain=DEFAULT_GAIN):
    """PE per (ADC x sample) per channel: the ``to_pe`` the chain needs for this detector."""
    return 1.0 / detector_gains(n_channels, detector_seed, mean_gain)


@numba.njit(nogil=True, cache=True)
def _build_pulses(ch, sample, pre, extent):
    """Merge per-photon regions [s - pre, s + extent) of photons sorted by (channel, sample).

    Returns (pulse channel, start sample, length, first photon, end photon) arrays.
    """
    n = len(ch)
    p_ch = np.empty(n, dtype=np.int64)
    p_start = np.empty(n, dtype=np.int64)
    p_len = np.empty(n, dtype=np.int64)
    p_ph0 = np.empty(n, dtype=np.int64)
    p_ph1 = np.empty(n, dtype=np.int64)
    n_p = 0
    if n == 0:
        return p_ch[:0], p_start[:0], p_len[:0], p_ph0[:0], p_ph1[:0]
    cur_ch = ch[0]
    cur_s = sample[0] - pre
    cur_e = sample[0] + extent
    first = 0
    for i in range(1, n):
        s0 = sample[i] - pre
        if ch[i] == cur_ch and s0 <= cur_e:
            cur_e = max(cur_e, sample[i] + extent)
            continue
        p_ch[n_p] = cur_ch
        p_start[n_p] = cur_s
        p_len[n_p] = cur_e - cur_s
        p_ph0[n_p] = first
        p_ph1[n_p] = i
        n_p += 1
        cur_ch = ch[i]
        cur_s = s0
        cur_e = sample[i] + extent
        first = i
    p_ch[n_p] = cur_ch
    p_start[n_p] = cur_s
    p_len[n_p] = cur_e - cur_s
    p_ph0[n_p] = first
    p_ph1[n_p] = n
    n_p += 1
    return p_ch[:n_p], p_start[:n_p], p_len[:n_p], p_ph0[:n_p], p_ph1[:n_p]


@numba.njit(nogil=True, cache=True)
def _record_times(p_start, p_len, spr):
    """Start sample of every record, pulses in order, fragments in order."""
    n_rec = 0
    for p in range(len(p_len)):
        n_rec += (p_len[p] + spr - 1) // spr
    out = np.empty(n_rec, dtype=np.int64)
    k = 0
    for p in range(len(p_len)):
        for r in range((p_len[p] + spr - 1) // spr):
            out[k] = p_start[p] + r * spr
            k += 1
    return out


@numba.njit(nogil=True, cache=True)
def _fill_records(
    out, dest, p_ch, p_start, p_len, p_ph0, p_ph1, ph_sample, ph_amp, shape, noise, noise_off,
    t0, dt, baseline_adc,
):
    """Write the digitized pulses into raw_records ``out`` at positions ``dest``."""
    if len(out) == 0:
        return
    spr = len(out[0]["data"])
    max_len = 1
    for p in range(len(p_len)):
        max_len = max(max_len, p_len[p])
    buf = np.zeros(max_len, dtype=np.float64)
    mask = len(noise) - 1
    ks = len(shape)
    rec = 0
    for p in range(len(p_len)):
        L = p_len[p]
        buf[:L] = 0.0
        for k in range(p_ph0[p], p_ph1[p]):
            s = ph_sample[k] - p_start[p]
            a = ph_amp[k]
            for j in range(ks):
                buf[s + j] += a * shape[j]
        off = noise_off[p]
        n_rec = (L + spr - 1) // spr
        for r in range(n_rec):
            o = out[dest[rec]]
            rec += 1
            i0 = r * spr
            length = min(spr, L - i0)
            o["time"] = t0 + (p_start[p] + i0) * dt
            o["length"] = length
            o["dt"] = dt
            o["channel"] = p_ch[p]
            o["pulse_length"] = L
            o["record_i"] = r
            o["baseline"] = 0
            d = o["data"]
            for j in range(length):
                i = i0 + j
                v = np.rint(baseline_adc + noise[(off + i) & mask] - buf[i])
                if v > 32767.0:
                    v = 32767.0
                elif v < -32768.0:
                    v = -32768.0
                d[j] = np.int16(v)
            for j in range(length, spr):
                d[j] = 0


class Simulator:
    """Synthetic TPC run, generated chunk by chunk (bounded memory), deterministic from ``seed``.

    >>> sim = Simulator(seed=1, event_rate_hz=50)
    >>> for start, end, raw_records in sim.iter_chunks(n_chunks=3): ...

    See the module docstring for the physics. ``sim.truth`` holds the truth of every event
    generated so far (TRUTH_DTYPE) unless ``keep_truth=False`` (for long runs that take it per
    chunk); ``iter_chunks(with_truth=True)`` yields it per chunk.
    ``Simulator.for_data_rate(mb_per_s)`` picks the event rate for a target raw data rate.
    """

    def __init__(
        self,
        seed=0,
        n_channels=248,
        event_rate_hz=50.0,
        dark_rate_hz=50.0,
        chunk_duration_ns=100_000_000,
        start_time_ns=0,
        dt=10,
        samples_per_record=DEFAULT_RECORD_LENGTH,
        s1_photons=(20, 300),
        s2_photons=(1000, 10000),
        drift_time_ns=(20_000, 200_000),
        s2_sigma_ns=(1000.0, 2000.0),
        s1_tau_ns=25.0,
        s2_top_fraction=0.6,
        noise_adc=2.5,
        baseline_adc=16000,
        pre_samples=50,
        post_samples=50,
        area_spread=0.25,
        detector_seed=0,
        mean_gain=DEFAULT_GAIN,
        keep_truth=True,
    ):
        if n_channels < 2:
            raise ValueError("Need at least 2 channels")
        self.seed = seed
        self.n_channels = int(n_channels)
        self.n_top_channels = self.n_channels // 2
        self.event_rate_hz = float(event_rate_hz)
        self.dark_rate_hz = float(dark_rate_hz)
        self.chunk_duration_ns = int(chunk_duration_ns)
        self.start_time_ns = int(start_time_ns)
        self.dt = int(dt)
        self.samples_per_record = int(samples_per_record)
        self.s1_photons = s1_photons
        self.s2_photons = s2_photons
        self.drift_time_ns = drift_time_ns
        self.s2_sigma_ns = s2_sigma_ns
        self.s1_tau_ns = float(s1_tau_ns)
        self.s2_top_fraction = float(s2_top_fraction)
        self.noise_adc = float(noise_adc)
        self.baseline_adc = float(baseline_adc)
        self.pre_samples = int(pre_samples)
        self.post_samples = int(post_samples)
        self.area_spread = float(area_spread)
        self.detector_seed = detector_seed
        self.gains = detector_gains(self.n_channels, detector_seed, mean_gain)
        self.to_pe = 1.0 / self.gains
        self.dtype = np.dtype(raw_record_dtype(self.samples_per_record))
        self._ss = np.random.SeedSequence(seed)
        self._event_rng = np.random.default_rng(self._ss.spawn(1)[0])
        self._noise = (
            np.random.default_rng([0xA015E, seed]).normal(0, self.noise_adc, _NOISE_TABLE_SIZE)
        ).astype(np.float64)
        self._extent = len(SPE_SHAPE) + self.post_samples
        # An event must start this long after a chunk start (pre-trigger window)
        self._lead_ns = (self.pre_samples + 2) * self.dt
        self._tail_ns = (self._extent + 2) * self.dt
        self._cursor = self.start_time_ns
        self._chunk_i = 0
        self._event_number = 0
        self._next_event_t = self._cursor + self._lead_ns + self._draw_wait()
        # ``sim.truth`` needs every chunk's truth kept; a source that hands each chunk's truth
        # on (the RawRecords plugin, a digitizer serving for hours) would only leak it.
        self.keep_truth = bool(keep_truth)
        self._truth = []

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def for_data_rate(cls, mb_per_s, chunk_mb=None, **kwargs):
        """A Simulator whose raw_records come at ~``mb_per_s`` MB/s (1 MB = 1e6 bytes) of run time.

        The event rate is scaled: dark-count data is computed, the data per event is measured
        once per configuration on a pilot run (cached). ``chunk_mb`` sets chunk_duration_ns so
        chunks hold about that many MB. Raises if dark counts alone exceed the target.
        """
        probe = cls(**{k: v for k, v in kwargs.items() if k != "event_rate_hz"})
        dark = probe.dark_mb_per_s()
        per_event = probe.mb_per_event()
        if mb_per_s <= dark:
            raise ValueError(f"Dark counts alone give {dark:.2f} MB/s >= {mb_per_s} MB/s")
        kwargs["event_rate_hz"] = (mb_per_s - dark) / per_event
        if chunk_mb is not None:
            kwargs["chunk_duration_ns"] = int(chunk_mb / mb_per_s * 1e9)
        return cls(**kwargs)

    def dark_mb_per_s(self):
        """Expected MB/s of raw_records from dark counts alone."""
        n_rec = -(-(self.pre_samples + self._extent) // self.samples_per_record)
        return self.n_channels * self.dark_rate_hz * n_rec * self.dtype.itemsize / MB

    def mb_per_event(self):
        """Mean MB of raw_records per event (pilot run of 200 events, cached per config)."""
        return _mb_per_event(
            self.n_channels, self.dt, self.samples_per_record, tuple(self.s1_photons),
            tuple(self.s2_photons), tuple(self.drift_time_ns), tuple(self.s2_sigma_ns),
            self.s1_tau_ns, self.s2_top_fraction, self.pre_samples, self.post_samples,
        )

    @property
    def expected_mb_per_s(self):
        """Mean MB/s of raw_records this simulator makes: dark counts plus events."""
        return self.dark_mb_per_s() + self.event_rate_hz * self.mb_per_event()

    # ------------------------------------------------------------------ truth
    @property
    def truth(self):
        """Truth (TRUTH_DTYPE) of all events generated so far."""
        if not self.keep_truth:
            raise RuntimeError("this Simulator was made with keep_truth=False: take each "
                               "chunk's truth from next_chunk / iter_chunks(with_truth=True)")
        if not self._truth:
            return np.zeros(0, dtype=TRUTH_DTYPE)
        return np.concatenate(self._truth)

    # ------------------------------------------------------------------ generation
    def _draw_wait(self):
        if self.event_rate_hz <= 0:
            return np.iinfo(np.int64).max // 4
        return int(self._event_rng.exponential(1e9 / self.event_rate_hz))

    def _draw_event(self, t):
        rng = self._event_rng
        n1 = int(rng.integers(self.s1_photons[0], self.s1_photons[1] + 1))
        lo, hi = np.log(self.s2_photons[0]), np.log(self.s2_photons[1])
        n2 = int(np.exp(rng.uniform(lo, hi)))
        drift = int(rng.uniform(*self.drift_time_ns))
        sigma = float(rng.uniform(*self.s2_sigma_ns))
        center = int(rng.uniform(0, self.n_top_channels))
        end = t + drift + int(5 * sigma) + self._tail_ns
        return (t, n1, n2, drift, sigma, center, end)

    def next_chunk(self, with_truth=False):
        """Generate the next chunk: (start, end, raw_records) [+ truth]."""
        start = self._cursor
        end = start + self.chunk_duration_ns
        events = []
        while self._next_event_t < end + self._lead_ns:
            ev = self._draw_event(self._next_event_t)
            events.append(ev)
            end = max(end, ev[-1])
            self._next_event_t += self._draw_wait()
        # Align the end to the sample grid of the run
        end = start + -(-(end - start) // self.dt) * self.dt
        rng = np.random.default_rng(self._ss.spawn(1)[0])
        raw, truth = self._digitize(start, end, events, rng)
        self._cursor = end
        self._chunk_i += 1
        if self.keep_truth:
            self._truth.append(truth)
        if with_truth:
            return start, end, raw, truth
        return start, end, raw

    def _digitize(self, start, end, events, rng):
        dt = self.dt
        n_samples = (end - start) // dt
        truth = np.zeros(len(events), dtype=TRUTH_DTYPE)
        # (sample, channel, gain) of every photon; each step's temporaries are freed when it
        # returns, so a chunk's photon tables are not all alive at once.
        pieces = self._event_photons(start, events, rng, truth) if events else []
        pieces.append(self._dark_photons(n_samples, end - start, rng))
        sample = np.concatenate([p[0] for p in pieces])
        ch = np.concatenate([p[1] for p in pieces])
        amp = np.concatenate([p[2] for p in pieces])
        del pieces
        order = np.argsort(ch * (1 << 40) + sample, kind="stable")
        # one table at a time, so an old and a new copy of only one are alive at once
        sample = sample[order]
        ch = ch[order]
        amp = amp[order]
        del order
        amp *= self.gains[ch]
        p_ch, p_start, p_len, p_ph0, p_ph1 = _build_pulses(
            ch, sample, self.pre_samples, self._extent
        )
        rec_t = _record_times(p_start, p_len, self.samples_per_record)
        rec_order = np.argsort(rec_t, kind="stable")
        dest = np.empty(len(rec_t), dtype=np.int64)
        dest[rec_order] = np.arange(len(rec_t))
        raw = np.empty(len(rec_t), dtype=self.dtype)
        noise_off = rng.integers(0, _NOISE_TABLE_SIZE, len(p_len))
        _fill_records(
            raw, dest, p_ch, p_start, p_len, p_ph0, p_ph1, sample, amp, SPE_SHAPE, self._noise,
            noise_off, start, dt, self.baseline_adc,
        )
        return raw, truth

    def _event_photons(self, start, events, rng, truth):
        """S1 and S2 photons of ``events`` as (sample, channel, gain); fills ``truth``."""
        dt = self.dt
        n_ev = len(events)
        ev = np.array([e[:6] for e in events], dtype=np.float64)
        t = ev[:, 0].astype(np.int64)
        n1 = ev[:, 1].astype(np.int64)
        n2 = ev[:, 2].astype(np.int64)
        drift = ev[:, 3].astype(np.int64)
        sigma = ev[:, 4]
        center = ev[:, 5]
        # S1
        idx1 = np.repeat(np.arange(n_ev), n1)
        t1 = t[idx1] + rng.exponential(self.s1_tau_ns, len(idx1)).clip(0, 10 * self.s1_tau_ns)
        c1 = rng.integers(0, self.n_channels, len(idx1))
        g1 = np.maximum(rng.normal(1.0, self.area_spread, len(idx1)), 0.1)
        s1 = ((t1.astype(np.int64) - start) // dt, c1.astype(np.int64, copy=False), g1)
        del t1
        truth["s1_area"] = np.bincount(idx1, weights=g1, minlength=n_ev)
        del idx1
        # S2
        idx2 = np.repeat(np.arange(n_ev), n2)
        s2c = t + drift
        t2 = s2c[idx2] + rng.normal(0, 1, len(idx2)).clip(-5, 5) * sigma[idx2]
        sample2 = (t2.astype(np.int64) - start) // dt
        del t2
        top = rng.random(len(idx2)) < self.s2_top_fraction
        n_top = self.n_top_channels
        c_top = np.rint(center[idx2] + rng.normal(0, max(n_top / 10, 1), len(idx2))) % n_top
        c_bot = rng.integers(n_top, self.n_channels, len(idx2))
        c2 = np.where(top, c_top, c_bot).astype(np.int64, copy=False)
        del top, c_top, c_bot
        g2 = np.maximum(rng.normal(1.0, self.area_spread, len(idx2)), 0.1)
        truth["s2_area"] = np.bincount(idx2, weights=g2, minlength=n_ev)
        del idx2
        truth["event_number"] = np.arange(self._event_number, self._event_number + n_ev)
        truth["time"] = t
        truth["endtime"] = s2c + (5 * sigma).astype(np.int64) + len(SPE_SHAPE) * dt
        truth["s1_time"] = t
        truth["s1_n_photons"] = n1
        truth["s2_time"] = s2c
        truth["s2_sigma"] = sigma
        truth["s2_n_photons"] = n2
        truth["drift_time"] = drift
        truth["n_photons"] = n1 + n2
        self._event_number += n_ev
        return [s1, (sample2, c2, g2)]

    def _dark_photons(self, n_samples, duration_ns, rng):
        """Dark counts as (sample, channel, gain), dropping pulses that would cross an edge."""
        n_dark = rng.poisson(self.dark_rate_hz * self.n_channels * duration_ns / 1e9)
        sd = rng.integers(0, max(n_samples, 1), n_dark)
        cd = rng.integers(0, self.n_channels, n_dark)
        gd = np.maximum(rng.normal(1.0, self.area_spread, n_dark), 0.1)
        ok = (sd - self.pre_samples >= 0) & (sd + self._extent <= n_samples)
        return sd[ok].astype(np.int64, copy=False), cd[ok].astype(np.int64, copy=False), gd[ok]

    def iter_chunks(self, duration_ns=None, n_chunks=None, raw_mb=None, with_truth=False):
        """Yield (start, end, raw_records) [+ truth] chunks until any given limit is reached.

        ``duration_ns``: stop once the run covers at least this long; ``n_chunks``: after that
        many chunks; ``raw_mb``: once at least this many MB of raw_records were produced.
        With no limit, yields forever. Chunks are contiguous: next start == previous end.
        """
        t_begin = self._cursor
        n = 0
        total = 0
        while True:
            if n_chunks is not None and n >= n_chunks:
                return
            if duration_ns is not None and self._cursor - t_begin >= duration_ns:
                return
            if raw_mb is not None and total >= raw_mb * MB:
                return
            item = self.next_chunk(with_truth=with_truth)
            n += 1
            total += item[2].nbytes
            yield item


@functools.lru_cache(maxsize=32)
def _mb_per_event(*detector):
    """The pilot run's MB per event, from disk when an earlier process ran it."""
    from .pilot_cache import cached_pilot

    return cached_pilot(("mb_per_event", *detector), lambda: _pilot_mb_per_event(*detector))


def _pilot_mb_per_event(
    n_channels, dt, spr, s1_photons, s2_photons, drift_time_ns, s2_sigma_ns, s1_tau_ns,
    s2_top_fraction, pre_samples, post_samples,
):
    # ~200 events in 10 small chunks: one big pilot chunk would cost ~200 MB of memory.
    n_chunks, events_per_chunk, rate = 10, 20, 200.0
    sim = Simulator(
        seed=987654321, n_channels=n_channels, event_rate_hz=rate, dark_rate_hz=0.0,
        chunk_duration_ns=int(events_per_chunk / rate * 1e9), dt=dt, samples_per_record=spr,
        s1_photons=s1_photons, s2_photons=s2_photons, drift_time_ns=drift_time_ns,
        s2_sigma_ns=s2_sigma_ns, s1_tau_ns=s1_tau_ns, s2_top_fraction=s2_top_fraction,
        pre_samples=pre_samples, post_samples=post_samples,
    )
    nbytes = n_events = 0
    for _ in range(n_chunks):
        _, _, raw, truth = sim.next_chunk(with_truth=True)
        nbytes += raw.nbytes
        n_events += len(truth)
    return nbytes / max(n_events, 1) / MB


def _chunk_bounds(item):
    return item[0], item[1]


def paced(chunks, speed=1.0, clock=_time.monotonic, sleep=_time.sleep):
    """Yield items of ``chunks`` no earlier than a live detector would deliver them.

    A chunk (start, end, ...) comes out when ``(end - first start) / speed`` ns of wall-clock
    time have passed since the first one was requested (a DAQ can only ship data it has taken).
    """
    t_wall0 = None
    t_data0 = None
    for item in chunks:
        start, end = _chunk_bounds(item)
        if t_wall0 is None:
            t_wall0, t_data0 = clock(), start
        delay = t_wall0 + (end - t_data0) / 1e9 / speed - clock()
        if delay > 0:
            sleep(delay)
        yield item


async def apaced(chunks, speed=1.0, clock=_time.monotonic):
    """Async form of paced: accepts a sync or async iterable, sleeps with asyncio.sleep.

    Generating a chunk is synchronous compute (tens of ms for 20 MB); wrap the simulator in a
    thread (``asyncio.to_thread``) if that latency matters to the loop.
    """
    t_wall0 = None
    t_data0 = None
    if hasattr(chunks, "__aiter__"):
        it = chunks
    else:
        async def _wrap():
            for x in chunks:
                yield x

        it = _wrap()
    async for item in it:
        start, end = _chunk_bounds(item)
        if t_wall0 is None:
            t_wall0, t_data0 = clock(), start
        delay = t_wall0 + (end - t_data0) / 1e9 / speed - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        yield item
