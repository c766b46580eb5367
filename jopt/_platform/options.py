"""XLA:CPU compile-option profiles, chosen by problem size (figures on the performance
page, ``benchmarks/RESULTS.md``).

* ``cpu-small`` (iterates up to ``SMALL`` elements, and up to ``MID`` when the process-wide
  small-loop setting outlines the loop): a solve costs what its kernel launches cost, and
  XLA's older emitters at optimization level 1 compile the loop in about half the time
  with the same run time.
* ``cpu-mid`` (up to ``MID``): the fusion emitters' vector kernels at level 1.
* ``cpu`` (larger): XLA's defaults plus 512-bit vectors where the CPU has them.
* ``cpu-outlined``: a program compiled as one function (the legacy emitter whatever the
  options), with YNNPACK fusions off so its large reductions stay emittable.

All CPU profiles use region-based copy insertion, which leaves fewer copies for the
loop's swap of ``x`` and ``∇f`` into the transform's previous point. Each profile's
options are probed before use (:func:`jopt._platform.probe.accepted_options`): an option
this jaxlib does not know is dropped with one warning.
"""

from __future__ import annotations

import threading

from jopt._platform.probe import accepted_options

SMALL = 256
MID = 4096
# The largest iterate (bytes) compiled as one function: beyond it the usual program's
# large kernels can use more cores.
OUTLINE_MAX_BYTES = 256 << 10
# The small-loop threshold (bytes) from which the process-wide setting outlines an
# L-BFGS loop up to MID float64 elements.
_OUTLINED_MIN_BYTES = 4 << 20

FUSIONS_OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
_VECTOR = {"xla_cpu_copy_insertion_use_region_analysis": True,
           "xla_cpu_prefer_vector_width": 512}
_SMALL_OPTIONS = {"xla_backend_optimization_level": 1,
                  "xla_llvm_disable_expensive_passes": True,
                  "xla_cpu_use_fusion_emitters": False,
                  "xla_cpu_copy_insertion_use_region_analysis": True}
PROFILES = {
    "cpu-small": _SMALL_OPTIONS,
    "cpu-outlined": {**_SMALL_OPTIONS, **FUSIONS_OFF},
    "cpu-mid": {**_VECTOR, "xla_backend_optimization_level": 1},
    "cpu": _VECTOR,
    # Loops of the diagnostics (Lanczos, Hutchinson): cheaper backend passes.
    "cpu-loops": {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True},
}

_refused: set[str] = set()
_lock = threading.Lock()


def refuse(profile: str) -> None:
    """Compile ``profile``'s programs with XLA's defaults from now on (XLA refused it)."""
    with _lock:
        _refused.add(profile)


def compiler_options(profile: str | None) -> dict | None:
    """The options of ``profile`` that this XLA accepts (``None``: XLA's defaults)."""
    if profile is None or profile in _refused:
        return None
    return accepted_options(PROFILES.get(profile))


def fusions_off() -> bool:
    """Whether ``cpu-outlined`` programs really compile without YNNPACK fusions (else the
    emitter check keeps its reduction-size limit)."""
    options = compiler_options("cpu-outlined") or {}
    return all(options.get(k) == v for k, v in FUSIONS_OFF.items())


def loops_outlined(threshold: int | None) -> bool:
    """Whether the process-wide small-loop ``threshold`` outlines loops up to ``MID``."""
    return threshold is not None and threshold >= _OUTLINED_MIN_BYTES


def profile_for(size: int, *, batched: bool, outline: bool, small_loops: int | None) -> str:
    """The profile for a program whose iterate has ``size`` elements."""
    if outline:
        return "cpu-outlined"
    if size <= SMALL or (size <= MID and not batched and loops_outlined(small_loops)):
        return "cpu-small"
    return "cpu-mid" if size <= MID else "cpu"
