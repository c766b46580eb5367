"""``jopt.enable_small_loop_kernels`` / ``jopt.small_loop_flags``: the XLA:CPU small-loop flag.

The flag only takes effect in a process whose backends start after it is set, so the
end-to-end checks run a fresh interpreter.
"""

import json
import os
import shlex
import subprocess
import sys
import textwrap

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

import jopt
from jopt._platform.small_loops import _OPTION, DEFAULT_MAX_BYTES, small_loop_threshold

_EXTRA = "--xla_backend_extra_options="


def _extra_entries(flags: str) -> list[str]:
    tokens = [t for t in shlex.split(flags) if t.startswith(_EXTRA)]
    assert len(tokens) <= 1
    return tokens[0][len(_EXTRA):].split(",") if tokens else []


_names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).map(lambda s: "k" + s)
_other_flags = st.lists(
    st.sampled_from(["--xla_dump_to=/tmp/d", "--xla_cpu_enable_fast_math=false",
                     "--xla_force_host_platform_device_count=4"]), max_size=3, unique=True)


@settings(max_examples=60, deadline=None)
@given(others=_other_flags,
       extra=st.lists(st.tuples(_names, st.sampled_from(["", "1", "abc"])), max_size=4,
                      unique_by=lambda e: e[0]),
       old=st.one_of(st.none(), st.integers(1, 10**9)),
       new=st.integers(1, 10**12))
def test_flags_merge_keeps_everything_else(others, extra, old, new):
    entries = [f"{k}={v}" if v else k for k, v in extra]
    if old is not None:
        entries.insert(len(entries) // 2, f"{_OPTION}={old}")
    flags = " ".join(others + ([_EXTRA + ",".join(entries)] if entries else []))
    out = jopt.small_loop_flags(new, flags)
    got = _extra_entries(out)
    assert got.count(f"{_OPTION}={new}") == 1
    assert [e for e in got if not e.startswith(_OPTION)] == [e for e in entries
                                                               if not e.startswith(_OPTION)]
    assert [t for t in shlex.split(out) if not t.startswith(_EXTRA)] == others
    assert jopt.small_loop_flags(new, out) == out  # idempotent


def test_flags_default_and_empty():
    assert jopt.small_loop_flags() == f"{_EXTRA}{_OPTION}={DEFAULT_MAX_BYTES}"
    assert jopt.small_loop_flags(5, "  ") == f"{_EXTRA}{_OPTION}=5"


@pytest.mark.parametrize("bad", [0, -3, 1.5, "16", True, None])
def test_bad_max_bytes(bad):
    with pytest.raises(ValueError, match="max_bytes"):
        jopt.small_loop_flags(bad)
    with pytest.raises(ValueError, match="max_bytes"):
        jopt.enable_small_loop_kernels(bad)


def test_bad_flags_type():
    with pytest.raises(TypeError, match="flags"):
        jopt.small_loop_flags(10, flags=["--xla_dump_to=x"])


def test_too_late_raises(monkeypatch):
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # the backends of this process have started
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    with pytest.raises(RuntimeError, match="before the first JAX computation"):
        jopt.enable_small_loop_kernels()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false"  # untouched


def test_already_set_from_the_shell_is_accepted(monkeypatch):
    flags = jopt.small_loop_flags(4096, "--xla_cpu_enable_fast_math=false")
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert jopt.enable_small_loop_kernels(4096) == flags


_CHILD = textwrap.dedent("""
    import json, sys
    import jopt
    if sys.argv[1] == "on":
        jopt.enable_small_loop_kernels()
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)

    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    x0 = jnp.asarray(np.tile([-1.2, 1.0], 5))
    solve = jax.jit(lambda x: jopt.minimize(rosen, x, method="lbfgs", tol=1e-8))
    hlo = solve.lower(x0).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    entry = entry[:entry.index("\\n}")]
    r = solve(x0)
    print(json.dumps({"entry_while": " while(" in entry,
                      "small_calls": hlo.count('xla_cpu_small_call="true"'),
                      "x": np.asarray(r.x).tolist(), "status": int(r.status),
                      "nit": int(r.nit)}))
""")


def _child(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], env=env, check=True,
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_process_compiles_the_solver_loop_into_one_kernel():
    import numpy as np

    off, on = _child("off"), _child("on")
    # Without the flag the solver's loop is a while thunk of the entry computation; with
    # it the loop is outlined into a call emitted as one kernel.
    assert off["entry_while"] and not on["entry_while"]
    assert on["small_calls"] > off["small_calls"]
    for r in (off, on):
        assert r["status"] == 0
        np.testing.assert_allclose(r["x"], np.ones(10), atol=1e-7)


@pytest.mark.parametrize("flags, expected", [
    ("", None),
    ("--xla_dump_to=/tmp/x", None),
    (f"{_EXTRA}a=1,{_OPTION}=4096,b", 4096),
    (f"--xla_cpu_enable_fast_math=false {_EXTRA}{_OPTION}=123", 123),
    (f"{_EXTRA}{_OPTION}=oops", None),
    ("'unbalanced", None),
])
def test_threshold_is_read_back(flags, expected):
    from jopt._platform.small_loops import small_loop_threshold

    assert small_loop_threshold(flags) == expected
    if expected is not None:
        assert small_loop_threshold(jopt.small_loop_flags(expected, flags)) == expected


def test_outlined_loops_compile_mid_sizes_with_the_small_profile(monkeypatch):
    from jopt._platform.options import profile_for

    sizes = {"tiny": 10, "mid": 1200, "large": 5000}

    def profiles(flags, batched=False):
        return [profile_for(n, batched=batched, outline=False,
                            small_loops=small_loop_threshold(flags)) for n in sizes.values()]

    assert profiles("") == ["cpu-small", "cpu-mid", "cpu"]
    assert profiles(jopt.small_loop_flags()) == ["cpu-small", "cpu-small", "cpu"]
    # A threshold too small to outline the loop at these sizes keeps the emitters.
    assert profiles(jopt.small_loop_flags(1 << 16))[1] == "cpu-mid"
    # minimize_many's batches are too large to outline: they keep the size's profile.
    assert profiles(jopt.small_loop_flags(), batched=True)[:2] == ["cpu-small", "cpu-mid"]


def test_flags_with_quoted_values_survive():
    out = jopt.small_loop_flags(64, "--xla_dump_to='/tmp/a b' --xla_cpu_enable_fast_math=false")
    assert shlex.split(out)[:2] == ["--xla_dump_to=/tmp/a b", "--xla_cpu_enable_fast_math=false"]
    assert jopt.small_loop_flags(64, out) == out
