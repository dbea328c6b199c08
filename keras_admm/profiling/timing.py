"""The timing protocol: warm-up, then interleaved round-robin repeats, or blocks.

Interleaved (the default): every model of one comparison is timed inside the same
loop, one call each per round, with the starting model rotated every round. On a
shared CPU, contention from other processes then slows every model alike instead of
whichever happened to run during a busy spell, so the ratios between models stay
fair. Every model's runner (session) is open the whole time.

Blocks: one model at a time, as a deployment runs it. Each block gives every model
in turn (start rotated every block) a fresh runner, its warm-up and its timed calls,
and drops the runner before the next model's is made. Engines whose idle threads
busy-wait (ONNX Runtime's spinning thread pool) can then keep their defaults, which
the interleaved order cannot afford.
"""

import dataclasses
import gc
import math
import numbers
import time

ORDERS = ("interleaved", "blocks")


@dataclasses.dataclass(frozen=True)
class TimingProtocol:
    """How long to time each model.

    Attributes:
        warmup: untimed calls per model before timing starts.
        min_repeats: timed calls per model, at least.
        min_time_s: wall time of the timed loop, at least (seconds).
        max_time_s: stop after this much loop time even if `min_repeats` is not
            reached (None: no cap). The count reached is reported.
        order: "interleaved" (all runners open, one call each per round) or
            "blocks" (one runner at a time, fresh every block; see the module
            docstring). In "blocks" order `warmup`, `min_repeats`, `min_time_s`
            and `max_time_s` apply to each model's turn in each block.
        blocks: how many blocks in "blocks" order (ignored otherwise); a
            multiple of the number of models lets each go first equally often.

    Example:
        >>> TimingProtocol(warmup=20, min_repeats=50, min_time_s=0,
        ...                order="blocks", blocks=8)
    """

    warmup: int = 3
    min_repeats: int = 10
    min_time_s: float = 1.0
    max_time_s: float | None = None
    order: str = "interleaved"
    blocks: int = 8

    def __post_init__(self):
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}.")
        if self.min_repeats < 1:
            raise ValueError(f"min_repeats must be >= 1, got {self.min_repeats}.")
        if self.min_time_s < 0:
            raise ValueError(f"min_time_s must be >= 0, got {self.min_time_s}.")
        if self.max_time_s is not None and self.max_time_s <= 0:
            raise ValueError(
                f"max_time_s must be > 0 or None, got {self.max_time_s}; pass None "
                "for no cap."
            )
        if self.order not in ORDERS:
            raise ValueError(
                f"order must be one of {', '.join(ORDERS)}, got {self.order!r}; "
                "use 'blocks' to time one fresh runner (session) at a time."
            )
        if isinstance(self.blocks, bool) or not isinstance(
            self.blocks, numbers.Integral
        ):
            raise ValueError(f"blocks must be an int >= 1, got {self.blocks!r}.")
        if self.blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {self.blocks}.")


def _timed_calls(run, protocol, clock):
    """Latencies of one runner's calls until both minimums are met (or the cap)."""
    times = []
    start = clock()
    while True:
        elapsed = clock() - start
        done = len(times) >= protocol.min_repeats and elapsed >= protocol.min_time_s
        capped = protocol.max_time_s is not None and elapsed >= protocol.max_time_s
        if done or (capped and times):
            return times
        begin = clock()
        run()
        times.append(clock() - begin)


def time_interleaved(runners, protocol=TimingProtocol(), clock=time.perf_counter):
    """Times several zero-argument callables round-robin in one loop.

    Each runner is warmed up `protocol.warmup` times, then the loop runs rounds of
    one timed call per runner (starting at a rotating runner) until at least
    `protocol.min_repeats` rounds are done and `protocol.min_time_s` has passed.

    Args:
        runners: a dict name -> callable taking no arguments; each call must block
            until its result is ready.
        protocol: a `TimingProtocol`.
        clock: the monotonic clock in seconds (tests substitute a fake one).

    Returns:
        A dict name -> list of per-call latencies in seconds, all of equal length.

    Raises:
        ValueError: if `runners` is empty, or the protocol's order is "blocks"
            (that order needs runner factories: `time_in_blocks`).

    Example:
        >>> times = time_interleaved({"dense": run_dense, "small": run_small},
        ...                          TimingProtocol(min_repeats=20, min_time_s=5))
    """
    if not runners:
        raise ValueError("time_interleaved() needs at least one runner.")
    if protocol.order != "interleaved":
        raise ValueError(
            f"time_interleaved() got a protocol with order={protocol.order!r}; "
            "call time_in_blocks() with runner factories for that order."
        )
    names = list(runners)
    for name in names:
        for _ in range(protocol.warmup):
            runners[name]()
    samples = {name: [] for name in names}
    start = clock()
    rounds = 0
    while True:
        elapsed = clock() - start
        done = rounds >= protocol.min_repeats and elapsed >= protocol.min_time_s
        capped = protocol.max_time_s is not None and elapsed >= protocol.max_time_s
        if done or (capped and rounds > 0):
            break
        offset = rounds % len(names)
        for name in names[offset:] + names[:offset]:
            begin = clock()
            runners[name]()
            samples[name].append(clock() - begin)
        rounds += 1
    return samples


def time_in_blocks(factories, protocol, clock=time.perf_counter):
    """Times several models one at a time, a fresh runner per model and block.

    For each of `protocol.blocks` blocks, every model in turn (the first one
    rotated every block) gets a new runner from its factory, `protocol.warmup`
    untimed calls, then timed calls until `protocol.min_repeats` and
    `protocol.min_time_s` are both met (or `protocol.max_time_s` caps it); the
    runner is dropped, and garbage collected, before the next model's is made, so
    only one is alive at a time.

    Args:
        factories: a dict name -> zero-argument callable returning a runner (a
            zero-argument callable that blocks until its result is ready).
        protocol: a `TimingProtocol`; its order is not checked, so an interleaved
            protocol's settings may be reused here.
        clock: the monotonic clock in seconds (tests substitute a fake one).

    Returns:
        A dict name -> list of `protocol.blocks` lists of per-call latencies (s).

    Raises:
        ValueError: if `factories` is empty.

    Example:
        >>> blocks = time_in_blocks(
        ...     {"dense": lambda: make_session("dense.onnx"),
        ...      "small": lambda: make_session("small.onnx")},
        ...     TimingProtocol(warmup=20, min_repeats=50, min_time_s=0,
        ...                    order="blocks"))
    """
    if not factories:
        raise ValueError("time_in_blocks() needs at least one runner factory.")
    names = list(factories)
    samples = {name: [] for name in names}
    for block in range(protocol.blocks):
        offset = block % len(names)
        for name in names[offset:] + names[:offset]:
            run = factories[name]()
            for _ in range(protocol.warmup):
                run()
            samples[name].append(_timed_calls(run, protocol, clock))
            del run
            gc.collect()  # Free the session (and its threads) before the next.
    return samples


def percentile(values, q):
    """The q-th percentile (0..100) of `values`, linear interpolation."""
    if not values:
        raise ValueError("percentile() of an empty list.")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    weight = position - low
    return ordered[low] * (1 - weight) + ordered[high] * weight


def summarize(latencies_s, batch_size):
    """Median and p90 latency (ms), throughput (samples/s) and count of a series.

    Args:
        latencies_s: per-call latencies in seconds.
        batch_size: samples per call, for the throughput.

    Returns:
        A dict with "median_ms", "p90_ms", "mean_ms", "min_ms", "count",
        "throughput" (samples per second at the median latency).
    """
    median = percentile(latencies_s, 50)
    return {
        "median_ms": median * 1e3,
        "p90_ms": percentile(latencies_s, 90) * 1e3,
        "mean_ms": sum(latencies_s) / len(latencies_s) * 1e3,
        "min_ms": min(latencies_s) * 1e3,
        "count": len(latencies_s),
        "throughput": batch_size / median if median > 0 else math.inf,
    }


def paired_speedup(baseline_s, model_s):
    """Median over rounds of baseline time / model time within the same round.

    With interleaved timing, sample r of every model comes from round r, so the
    per-round ratio cancels contention that drifts slower than one round; it is a
    steadier speedup estimate than the ratio of medians on a shared machine. With
    `time_in_blocks`, pass each model's block medians: entry b is block b.

    Args:
        baseline_s: the baseline's per-round latencies (or block medians).
        model_s: the model's, same length.

    Returns:
        The median per-round speedup.

    Raises:
        ValueError: if the series are empty or of different lengths.
    """
    if not baseline_s or len(baseline_s) != len(model_s):
        raise ValueError(
            f"paired_speedup() needs two equally long non-empty series, got "
            f"{len(baseline_s)} and {len(model_s)}; pass samples from one "
            "time_interleaved() loop, or block medians from one time_in_blocks()."
        )
    return percentile([b / m for b, m in zip(baseline_s, model_s)], 50)
