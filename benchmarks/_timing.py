"""Shared timing helpers for the benchmarks: compile time and steady-state step time.

Conventions every benchmark follows:

* compile time is ``jax.jit(fn).lower(*args)`` (trace + lower) plus ``.compile()``, measured
  apart from any run;
* step time is the median of ``repeats`` timed calls after ``warmup`` untimed ones, each
  call ended with ``jax.block_until_ready`` so asynchronous dispatch is not mistaken for
  speed;
* a step that donates its inputs is timed as a loop that feeds each call's outputs into the
  next call (a donated buffer cannot be passed twice);
* contenders that are compared are timed interleaved (round-robin, rotating the order each
  round), so load from other processes on a shared machine falls on all of them alike.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax


@dataclass(frozen=True)
class CompileTiming:
    """Wall-clock seconds spent tracing + lowering and compiling one jitted function."""

    lower_s: float
    compile_s: float

    @property
    def total_s(self) -> float:
        return self.lower_s + self.compile_s


def compile_timed(
    fn: Callable[..., Any], args: Sequence[Any], donate_argnums: Sequence[int] = ()
) -> tuple[Any, CompileTiming]:
    """Compile ``jax.jit(fn, donate_argnums=...)`` for ``args``; return it and its timings.

    A fresh ``jax.jit`` object is built here, so only caches shared across jit objects (none
    in a fresh process without a persistent compilation cache) could shorten the timing.
    """
    jitted = jax.jit(fn, donate_argnums=tuple(donate_argnums))
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return compiled, CompileTiming(lower_s=t1 - t0, compile_s=t2 - t1)


def run_steps(step: Callable[..., Any], carry: tuple, consts: tuple, n: int) -> tuple:
    """Call ``carry = step(*carry, *consts)`` ``n`` times (untimed); return the last carry."""
    for _ in range(n):
        carry = jax.block_until_ready(step(*carry, *consts))
    return carry


def time_steps(
    step: Callable[..., Any],
    carry: tuple,
    consts: tuple = (),
    warmup: int = 3,
    repeats: int = 15,
) -> tuple[list[float], tuple]:
    """Per-call wall times (s) of ``carry = step(*carry, *consts)`` after ``warmup`` calls.

    ``step`` returns the new carry (a tuple matching the leading arguments), which is what
    lets it donate those arguments. Returns the ``repeats`` timings and the final carry.
    """
    carry = run_steps(step, carry, consts, warmup)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        carry = jax.block_until_ready(step(*carry, *consts))
        times.append(time.perf_counter() - t0)
    return times, carry


def time_interleaved(
    cases: dict[str, tuple[Callable[..., Any], tuple, tuple]],
    warmup: int = 3,
    repeats: int = 15,
) -> dict[str, list[float]]:
    """Per-call wall times (s) of several ``(step, carry, consts)`` cases, interleaved.

    Each case is warmed up ``warmup`` calls, then ``repeats`` rounds each time every case
    once, in an order rotated by one every round. ``step`` returns the new carry, as in
    :func:`time_steps`.
    """
    carries = {k: run_steps(step, carry, consts, warmup)
               for k, (step, carry, consts) in cases.items()}
    names = list(cases)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            step, _, consts = cases[k]
            t0 = time.perf_counter()
            carries[k] = jax.block_until_ready(step(*carries[k], *consts))
            times[k].append(time.perf_counter() - t0)
    return times


def time_calls_interleaved(calls: dict[str, Callable[[], Any]], rounds: int
                           ) -> dict[str, list[float]]:
    """Wall times (s) of argument-free ``calls`` (each blocking until its result is
    ready), ``rounds`` rounds of each once, the order rotated by one every round."""
    names = list(calls)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            calls[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def machine_line() -> str:
    """Start the backend (not counted by the caller's timings) and describe the run:
    ``"jax V (backend), N core(s) available, 1-min load L at start"``."""
    jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))
    return (f"jax {jax.__version__} ({jax.default_backend()}), "
            f"{len(os.sched_getaffinity(0))} core(s) available, 1-min load "
            f"{os.getloadavg()[0]:.1f} at start")


def median(xs: Sequence[float]) -> float:
    """The median of ``xs``."""
    return statistics.median(xs)


def wait_for_load(limit: float = 1.5, poll: float = 30.0, max_wait: float = 900.0) -> float:
    """Sleep until the 1-minute load average is below ``limit`` (at most ``max_wait`` s).

    Returns the load average at the end of the wait (printed too).
    """
    t0 = time.time()
    while True:
        with open("/proc/loadavg") as fh:
            load = float(fh.read().split()[0])
        if load < limit or time.time() - t0 >= max_wait:
            print(f"# load {load:.2f} after waiting {time.time() - t0:.0f} s", flush=True)
            return load
        time.sleep(poll)


def emit(lines: Sequence[str], md_path: str | None) -> str:
    """Print a report's ``lines`` and write them to ``md_path`` (if given); returns the text."""
    text = "\n".join(lines)
    print(text)
    if md_path:
        with open(md_path, "w") as fh:
            fh.write(text + "\n")
    return text
