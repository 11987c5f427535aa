"""Timing helpers shared by the benchmarks: interleaved rounds, robust statistics, Markdown.

Noise on a shared machine comes in bursts (another process, a GC pass, frequency changes), so the
implementations are timed in rounds that interleave them: each round times every implementation
once, in a rotating order, and the statistics are taken over rounds. A burst then hits all of them
alike instead of one implementation's whole measurement.
"""

from __future__ import annotations

import ctypes
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Case = Callable[[], object]


@dataclass(frozen=True)
class Stats:
    """Seconds per call over the rounds: median and the 10th and 90th percentiles."""

    median: float
    p10: float
    p90: float
    rounds: int
    calls_per_round: int

    @classmethod
    def of(cls, samples: Sequence[float], calls_per_round: int) -> Stats:
        ordered = sorted(samples)
        return cls(statistics.median(ordered), _quantile(ordered, 0.1),
                   _quantile(ordered, 0.9), len(ordered), calls_per_round)

    def scaled(self, factor: float) -> Stats:
        """The same statistics divided by ``factor`` (per op instead of per call, say)."""
        return Stats(self.median / factor, self.p10 / factor, self.p90 / factor, self.rounds,
                     self.calls_per_round)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _time_calls(case: Case, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        case()
    return (time.perf_counter() - start) / calls


def measure(cases: Mapping[str, Case], *, budget: float, min_sample: float = 0.002,
            warmup: int = 3, min_rounds: int = 5, max_rounds: int = 400) -> dict[str, Stats]:
    """Seconds per call of each case, from interleaved rounds filling about ``budget`` seconds.

    Each case is first called ``warmup`` times (at least once: caches, lazy imports, allocator
    pools); the warm-up calls after the first pick a per-case number of calls per sample so that
    one sample lasts at least
    ``min_sample`` seconds (the timer's resolution and the loop's overhead then vanish), then
    rounds run until the budget is spent (at least ``min_rounds``).
    """
    names = list(cases)
    calls: dict[str, int] = {}
    round_cost = 0.0
    for name in names:
        case = cases[name]
        first = _time_calls(case, 1)  # pays for lazy imports and caches
        per_call = _time_calls(case, warmup - 1) if warmup > 1 else first
        calls[name] = max(1, math.ceil(min_sample / max(per_call, 1e-9)))
        round_cost += per_call * calls[name]
    rounds = int(min(max_rounds, max(min_rounds, budget / max(round_cost, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_time_calls(cases[name], calls[name]))
    return {name: Stats.of(samples[name], calls[name]) for name in names}


def once(cases: Mapping[str, Case]) -> dict[str, Stats]:
    """One timed call of each case, no warm-up: for cases that each take seconds (--quick)."""
    return {name: Stats.of([_time_calls(case, 1)], 1) for name, case in cases.items()}


# --- formatting ----------------------------------------------------------------------------------

def fmt_time(seconds: float) -> str:
    """A duration in the unit that keeps three significant digits readable."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.3g}" if seconds * 1e6 < 100 else f"{seconds * 1e6:.0f}"


def fmt_spread(stats: Stats, unit: Callable[[float], str] = fmt_us) -> str:
    """``median [p10–p90]`` in the given unit (the median alone below three rounds)."""
    if stats.rounds < 3:
        return unit(stats.median)
    return f"{unit(stats.median)} [{unit(stats.p10)}–{unit(stats.p90)}]"


def fmt_ratio(ratio: float) -> str:
    """A ratio readable at any scale: 0.52x, 3.1e-04x."""
    return f"{ratio:.2f}x" if ratio >= 0.01 else f"{ratio:.1e}x"


@dataclass(frozen=True)
class Target:
    """One line of a benchmark's summary: what was measured against which target."""

    what: str
    measured: str
    target: str
    ok: bool

    @classmethod
    def ratio(cls, what: str, ratio: float, target: float) -> Target:
        return cls(what, fmt_ratio(ratio), f"<= {target:.2f}x", ratio <= target)


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio <= target else "MISS"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                   right: Sequence[bool] | None = None) -> str:
    """A GitHub Markdown table with aligned columns (numbers right-aligned)."""
    aligned = right if right is not None else [i > 0 for i in range(len(headers))]
    widths = [max(len(str(h)), *(len(str(row[i])) for row in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [str(c).rjust(w) if r else str(c).ljust(w)
                  for c, w, r in zip(cells, widths, aligned, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else (":" + "-" * (w + 1))
                          for w, r in zip(widths, aligned, strict=True)) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


# --- the BLAS NumPy uses -------------------------------------------------------------------------

@dataclass(frozen=True)
class BlasInfo:
    """Which BLAS NumPy calls and with how many threads (``threads`` None when unknown)."""

    library: str
    version: str
    threads: int | None
    core: str
    how: str


def _threadpoolctl_info() -> BlasInfo | None:
    try:
        import threadpoolctl
    except ImportError:
        return None
    for pool in threadpoolctl.threadpool_info():
        if pool.get("user_api") == "blas" and "numpy" in str(pool.get("filepath", "")):
            return BlasInfo(str(pool.get("internal_api")), str(pool.get("version")),
                            int(pool["num_threads"]), str(pool.get("architecture", "?")),
                            "threadpoolctl")
    return None


def _loaded_openblas() -> str | None:
    """The path of the OpenBLAS that NumPy loaded, read from this process's memory map."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if "openblas" in os.path.basename(path).lower() and "numpy" in path:
                    return path
    except OSError:
        pass
    return None


def _openblas_library() -> tuple[str, ctypes.CDLL] | None:
    """NumPy's OpenBLAS, opened through ctypes, and its path."""
    path = _loaded_openblas()
    if path is None:
        return None
    try:
        return path, ctypes.CDLL(path)
    except OSError:
        return None


def _ctypes_openblas_info(config: Mapping[str, object]) -> BlasInfo | None:
    """OpenBLAS's own answers (thread count, the kernel it picked), asked through ctypes."""
    opened = _openblas_library()
    if opened is None:
        return None
    path, lib = opened
    threads: int | None = None
    core = "?"
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("64_", "_64", ""):
            get_threads = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            get_core = getattr(lib, f"{prefix}_get_corename{suffix}", None)
            if get_threads is None:
                continue
            get_threads.restype = ctypes.c_int
            threads = int(get_threads())
            if get_core is not None:
                get_core.restype = ctypes.c_char_p
                core = (get_core() or b"?").decode()
            break
        if threads is not None:
            break
    blas = config.get("blas", {})
    version = str(blas.get("version", "?")) if isinstance(blas, dict) else "?"
    return BlasInfo(os.path.basename(path), version, threads, core, "ctypes (OpenBLAS API)")


def set_blas_threads(threads: int) -> bool:
    """Set the thread count of NumPy's OpenBLAS (threadpoolctl or OpenBLAS's API); whether it
    worked. Only the thread count: the kernel OpenBLAS picked (OPENBLAS_CORETYPE) is left alone."""
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(threads, user_api="blas")
        return True
    except ImportError:
        pass
    opened = _openblas_library()
    if opened is None:
        return False
    _, lib = opened
    for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_",
                 "openblas_set_num_threads64_", "openblas_set_num_threads"):
        setter = getattr(lib, name, None)
        if setter is not None:
            setter.argtypes = [ctypes.c_int]
            setter(threads)
            return True
    return False


def blas_info() -> BlasInfo:
    """NumPy's BLAS: by threadpoolctl if installed, else OpenBLAS's API, else numpy.show_config."""
    found = _threadpoolctl_info()
    if found is not None:
        return found
    deps: Any = {}
    try:
        config: Any = np.show_config(mode="dicts")
        if isinstance(config, dict):
            deps = config.get("Build Dependencies", {})
    except (TypeError, ValueError):  # NumPy < 1.26 has no mode="dicts"
        pass
    found = _ctypes_openblas_info(deps)
    if found is not None:
        return found
    blas = deps.get("blas", {}) if isinstance(deps, dict) else {}
    name = str(blas.get("name", "?")) if isinstance(blas, dict) else "?"
    version = str(blas.get("version", "?")) if isinstance(blas, dict) else "?"
    return BlasInfo(name, version, None, "?", "numpy.show_config")


# --- memory ---------------------------------------------------------------------------------------

def _proc_status_kib(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM``-style line of /proc/self/status, in KiB (None off Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakRss:
    """The growth of this process's peak resident set over a block, in KiB.

    Linux keeps ``ru_maxrss`` across fork and exec, so in a child it starts at the parent's size
    and says nothing about the child. ``VmHWM`` (the peak of this address space) does not; writing
    "5" to /proc/self/clear_refs resets it to the current size, so the delta covers the block
    alone. Off Linux this falls back to the ``ru_maxrss`` delta.
    """

    def __init__(self) -> None:
        self.delta_kib: int | None = None
        self.how = ""
        self._before = 0

    def __enter__(self) -> PeakRss:
        import resource

        reset = False
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            reset = True
        except OSError:
            pass
        rss = _proc_status_kib("VmRSS")
        hwm = _proc_status_kib("VmHWM")
        if rss is not None and hwm is not None:
            self._before = rss if reset else hwm
            self.how = "VmHWM after clear_refs" if reset else "VmHWM delta"
        else:
            self._before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.how = "ru_maxrss delta"
        return self

    def __exit__(self, *exc: object) -> None:
        import resource

        if self.how.startswith("VmHWM"):
            self.delta_kib = (_proc_status_kib("VmHWM") or 0) - self._before
        else:
            self.delta_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._before
