"""Every example runs in its quick mode and exits 0 (`make examples`, run by CI; the
examples are not part of `make test`, whose budget is the library's tests).

Each ``examples/<name>.py`` runs as ``python examples/<name>.py --quick`` in a fresh
process (a fresh JAX: several examples set ``jax_enable_x64`` at import) from a temporary
working directory, so an example that writes relative to the working directory, or
needs to be started from the repository root, fails here. Examples check their own
claims with ``assert``; a failed claim is a non-zero exit.

Most of a quick run is XLA compilation, and ``tour.py`` runs every other example's code
again, so the runs share one JAX persistent compilation cache in this session's temporary
directory (shared by pytest-xdist's workers), and the tour runs last: its sections then
load the other examples' programs instead of compiling them again. The others run slowest
first, so that two workers finish them at about the same time. The cache changes no
results; an entry that cannot be read is compiled afresh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn", reason="the examples need the [examples] extra")
pytest.importorskip("matplotlib", reason="the examples need the [examples] extra")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# Slowest first (quick-mode times on 2 cores); any new example after these; the tour last.
ORDER = ("compress_digits", "ladder", "curvature", "small_loops", "bilevel_regularization",
         "sweep_learning_rates", "first_order", "quasi_newton", "gradient_check",
         "linear_regression")
LAST = "tour"


def _order(path: Path) -> tuple[bool, int, str]:
    name = path.stem
    return (name == LAST, ORDER.index(name) if name in ORDER else len(ORDER), name)


# The tour (`make demo`) runs every other example's code again: CI runs it on its own
# (`make demo-quick` in .ci/run), outside `make test`'s time budget.
SCRIPTS = sorted((p for p in EXAMPLES.glob("*.py")
                  if not p.name.startswith(("_", "test_")) and p.stem != LAST), key=_order)


@pytest.fixture(scope="session")
def compilation_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JAX compilation cache directory shared by this session's pytest-xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # each worker's basetemp lies in the session's directory
    path = root / "jax-compilation-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_example_quick(script: Path, tmp_path: Path, compilation_cache: Path):
    pythonpath = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(pythonpath),
               JAX_COMPILATION_CACHE_DIR=str(compilation_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    env.pop("JOPT_EXAMPLES_QUICK", None)  # the flag alone must select quick mode
    proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{script.name} --quick exited {proc.returncode}\n--- stdout (tail)\n"
        f"{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}")
    assert list(tmp_path.iterdir()) == [], "an example wrote into its working directory"


def test_examples_found():
    assert set(ORDER) <= {p.stem for p in SCRIPTS}
    assert (EXAMPLES / f"{LAST}.py").is_file()
