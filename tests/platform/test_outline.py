"""One XLA:CPU function per solver loop (``jopt._platform.outline.outlined_call``), per program.

``jopt.minimize`` compiles its loop as a single function when the traced loop passes
``jopt._platform.outline.outlinable``. These tests check (a) that it happens where it should and not
where it must not, (b) that outlined and usual loops solve alike (against scipy, and
against each other), (c) the emitter's preconditions that once aborted the process, each
as a regression case, and (d) the fallback when XLA refuses an outlined loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import jopt
from jopt import _platform as platform
from jopt._platform import options, probe
from jopt._platform import outline as xla_cpu
from jopt._platform.outline import outlinable
from jopt.solve import api
from jopt.tree import set_row


def _outline(nested, x, fun, args, verbose=0):
    """Whether the platform's plan for ``fun(x, *args)`` outlines the program."""
    return platform.plan(fun, x, args, nested=nested, verbose=verbose).outline


def _tolerances(dtype=np.float64):
    return tuple(api._device_scalar(t, np.dtype(dtype)) for t in (1e-6, 0.0, 0.0))

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu",
                                reason="outlining is an XLA:CPU code-generation choice")


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _last_program():
    """(program, plan) of the last eager ``minimize`` remembered for the fast path."""
    program, plan, _ = list(api._FAST._items.values())[-1]
    return program, plan


def _ours_in(text: str) -> int:
    """Calls marked by jopt (XLA's own pass marks small calls but never `inlineable`)."""
    return sum(" call(" in line and 'inlineable="false",xla_cpu_small_call="true"' in line
               for line in text.splitlines())


def _solve(fun, x0, outline: bool, monkeypatch, **kw):
    """``minimize`` with a fresh wrapper of ``fun`` (so a fresh program), outlined or not."""
    with monkeypatch.context() as m:
        if not outline:
            m.setattr(xla_cpu, "_outline_enabled", False)
        fresh = lambda x, *a: fun(x, *a)  # noqa: E731
        _ALIVE.append(fresh)  # (the fast-call store drops a program once its objective dies)
        return jopt.minimize(fresh, x0, **kw)


_ALIVE: list = []


def test_small_solve_is_one_function_and_agrees_with_scipy():
    x0 = jnp.asarray(np.tile([-1.2, 1.0], 5))
    fun = lambda x: rosen(x)  # noqa: E731  (a fresh objective: a fresh program)
    res = jopt.minimize(fun, x0, tol=1e-8)
    run, config = _last_program()
    assert config.outline
    tols = tuple(api._device_scalar(t, np.dtype(np.float64)) for t in (1e-8, 0.0, 0.0))
    text = run.lower(x0, (), *tols, api._no_limit()).compile().as_text()
    assert _ours_in(text) == 1
    ref = scipy.optimize.minimize(lambda z: float(rosen(jnp.asarray(z))), np.asarray(x0),
                                  jac=lambda z: np.asarray(jax.grad(rosen)(jnp.asarray(z))),
                                  method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 0})
    assert int(res.status) == jopt.Status.CONVERGED
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)


@pytest.mark.parametrize("method", ["lbfgs", "bfgs", "cg"])
def test_split_backward_pass_stays_in_the_one_function(method):
    """A convex objective with transcendental terms read through shifted slices: the line
    search splits its backward pass off (a conditional inside the outlined call), and the
    solve agrees with scipy's on the same objective."""
    n = 50
    target = jnp.linspace(-2.0, 2.0, n) ** 3

    def stencil(x):
        return jnp.sum(jnp.cosh(x[1:] - x[:-1])) + 0.5 * jnp.sum((x - target) ** 2)

    x0 = jnp.zeros(n)
    fun = lambda x: stencil(x)  # noqa: E731  (a fresh objective: a fresh program)
    assert platform.plan(fun, x0, (), nested=False).split
    res = jopt.minimize(fun, x0, method=method, tol=1e-7)
    run, config = _last_program()
    assert config.outline
    tols = tuple(api._device_scalar(t, np.dtype(np.float64)) for t in (1e-7, 0.0, 0.0))
    text = run.lower(x0, (), *tols, api._no_limit()).compile().as_text()
    assert _ours_in(text) == 1 and "conditional(" in text
    grad = jax.jit(jax.grad(stencil))
    ref = scipy.optimize.minimize(lambda z: float(stencil(jnp.asarray(z))), np.asarray(x0),
                                  jac=lambda z: np.asarray(grad(jnp.asarray(z))),
                                  method="L-BFGS-B", options={"gtol": 1e-9, "ftol": 0})
    assert int(res.status) == jopt.Status.CONVERGED, res.message
    assert float(jnp.max(jnp.abs(grad(res.x)))) <= 1e-7
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    np.testing.assert_allclose(float(res.fun), ref.fun, rtol=1e-12)


@pytest.mark.parametrize("method", ["lbfgs", "bfgs", "cg", "newton-cg", "trust-ncg"])
def test_outlined_and_usual_loops_solve_alike(method, monkeypatch):
    a = jnp.asarray([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])

    def fun(x, b):
        return 0.5 * x @ a @ x - b @ x + 0.05 * jnp.sum(x**4)

    b = jnp.asarray([1.0, -2.0, 0.5])
    x0 = jnp.zeros(3)
    on = _solve(fun, x0, True, monkeypatch, method=method, args=(b,), tol=1e-10)
    assert _last_program()[1].outline
    off = _solve(fun, x0, False, monkeypatch, method=method, args=(b,), tol=1e-10)
    assert not _last_program()[1].outline
    for r in (on, off):
        assert int(r.status) == jopt.Status.CONVERGED, r.message
    np.testing.assert_allclose(on.x, off.x, atol=1e-9)
    assert abs(float(on.fun) - float(off.fun)) <= 1e-12


def test_mid_size_solve_is_one_function_without_library_fusions(monkeypatch):
    """n = 10,000: reductions of 80 KB, which XLA:CPU gives to YNNPACK fusions (refused by
    the single-function emitter) unless the program's options turn those off, as
    minimize's "cpu-outlined" options do. Outlined and usual programs solve alike."""
    n = 10_000

    def fun(x):  # SROSENBR plus a full-length (80 KB) reduction; minimizer: all ones
        return (jnp.sum(100.0 * (x[1::2] - x[::2] ** 2) ** 2 + (1.0 - x[::2]) ** 2)
                + 1e-3 * jnp.sum((x - 1.0) ** 2))

    x0 = jnp.asarray(np.tile([-1.2, 1.0], n // 2))
    supported = options.fusions_off()  # True with the pinned jaxlib
    on = _solve(fun, x0, True, monkeypatch)
    run, config = _last_program()
    assert config.outline == supported  # without the option: the 32 KiB limit refuses it
    assert options.PROFILES["cpu-outlined"]["xla_cpu_experimental_ynn_fusion_type"] == ""
    text = run.lower(x0, (), *_tolerances(), api._no_limit()).compile().as_text()
    assert _ours_in(text) == int(supported)
    assert not platform._REFUSED.get(fun, platform._shapes_key(x0, ()))
    off = _solve(fun, x0, False, monkeypatch)
    for r in (on, off):
        assert int(r.status) == jopt.Status.CONVERGED, r.message
        assert float(jnp.max(jnp.abs(jax.grad(fun)(r.x)))) <= 1e-6
    np.testing.assert_allclose(on.x, np.ones(n), atol=1e-5)
    np.testing.assert_allclose(on.x, off.x, atol=1e-6)


def test_without_the_library_fusion_option_the_size_limit_stays(monkeypatch):
    """A jaxlib whose XLA does not know the (experimental) YNNPACK option: the probe drops
    it with one warning, and outlining keeps the 32 KiB reduction limit, so a
    10,000-element solve compiles the usual way while a small one is still outlined."""
    real = probe._compiles
    monkeypatch.setattr(probe, "_compiles", lambda opts: "xla_cpu_experimental_ynn_fusion_type"
                        not in opts and real(opts))
    probe._accepted.cache_clear()
    monkeypatch.setattr(probe, "_warned", set())
    try:
        with pytest.warns(jopt.JoptWarning, match="refuses the XLA compile options"):
            got = options.compiler_options("cpu-outlined")
        assert "xla_cpu_experimental_ynn_fusion_type" not in got
        assert got == options.PROFILES["cpu-small"]
        assert not options.fusions_off()
        big = jnp.asarray(np.tile([-1.2, 1.0], 5000))
        srosen = lambda x: jnp.sum(100.0 * (x[1::2] - x[::2] ** 2) ** 2 + (1.0 - x[::2]) ** 2)  # noqa: E731
        assert not _outline(False, big, srosen, ())
        assert _outline(False, jnp.zeros(6), lambda x: rosen(x), ())
    finally:
        probe._accepted.cache_clear()
    # and an unknown option really is an error XLA reports
    with pytest.raises(jax.errors.JaxRuntimeError, match="compile option"):
        jax.jit(lambda x: x + 1, compiler_options={"xla_cpu_no_such_option": ""})(1.0)


# Each of these once aborted the process in XLA's emitter (a CHECK failure): a closed-over
# matrix in a product, loop-invariant fields (no line search), an empty state leaf (the
# CG chain), a closed-over array of 10 KB, history buffers, counters.
@pytest.mark.parametrize("case", ["fixed-step-lbfgs", "fixed-step-bfgs", "fixed-step-cg",
                                  "data-4k", "data-10k", "history", "maxfev-ftol-xtol"])
def test_emitter_preconditions_hold(case, monkeypatch):
    rng = np.random.default_rng(0)
    a = jnp.asarray([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
    b = jnp.asarray([1.0, -2.0, 0.5])
    kw: dict = {}
    x0 = jnp.zeros(3)
    if case.startswith("fixed-step"):
        kind = case.split("-")[-1]
        direction = {"lbfgs": jopt.scale_by_lbfgs, "bfgs": jopt.scale_by_bfgs,
                     "cg": jopt.scale_by_nonlinear_cg}[kind]
        kw = dict(method=optax.chain(direction(), optax.scale(0.2)), maxiter=40, tol=1e-30)

        def fun(x):
            return 0.5 * x @ a @ x - b @ x
    elif case.startswith("data"):
        rows = 25 if case == "data-4k" else 64  # 25 x 20 x 8 = 4,000 B; 64 x 20 x 8 = 10,240
        data = jnp.asarray(rng.normal(size=(rows, 20)))
        y = jnp.asarray(rng.normal(size=rows))
        x0 = jnp.zeros(20)

        def fun(w):
            return jnp.mean((data @ w - y) ** 2) + 1e-2 * w @ w
    else:
        kw = (dict(history=True) if case == "history"
              else dict(maxfev=500, ftol=1e-14, xtol=1e-14))

        def fun(x):
            return 0.5 * x @ a @ x - b @ x + 0.05 * jnp.sum(x**4)
    on = _solve(fun, x0, True, monkeypatch, **kw)
    outlined = _last_program()[1].outline
    off = _solve(fun, x0, False, monkeypatch, **kw)
    assert outlined == (case != "data-10k")  # over 4 KiB of closed-over data: not outlined
    np.testing.assert_allclose(on.x, off.x, rtol=1e-9, atol=1e-12)
    assert int(on.status) == int(off.status)


def test_not_outlined_where_the_emitter_cannot_go(monkeypatch):
    x0 = jnp.linspace(-1.0, 1.0, 6)
    idx = jnp.asarray([0, 2, 4])
    fancy = lambda x: jnp.sum((x[idx] - 1.0) ** 2) + jnp.sum(x**2)  # noqa: E731  (scatter)
    sorted_ = lambda x: jnp.sum(jnp.sort(x) * jnp.arange(6.0)) + jnp.sum(x**4)  # noqa: E731
    for fun in (fancy, sorted_):
        assert not _outline(False, x0, fun, ())
    assert _outline(False, x0, rosen, ())
    assert not _outline(True, x0, rosen, ())  # inside a caller's trace
    assert _outline(False, jnp.zeros(32_768), rosen, ())  # 256 KiB: the largest
    assert not _outline(False, jnp.zeros(32_769), rosen, ())
    assert _outline(False, jnp.zeros(65_536, jnp.float32), rosen, ())  # bytes count
    # verbose printing is a callback: not outlined, and the program keeps the usual options
    assert not _outline(False, x0, rosen, (), 100)
    printed = lambda x: rosen(x)  # noqa: E731  (alive while its program is inspected)
    jopt.minimize(printed, x0, verbose=100)
    run, config = _last_program()
    assert not config.outline
    assert config.profile == "cpu-small"
    assert _ours_in(run.lower(x0, (), *_tolerances(), api._no_limit()).compile().as_text()) == 0
    # inside a caller's jit or vmap nothing is outlined by jopt
    text = jax.jit(lambda x: jopt.minimize(rosen, x).x).lower(x0).compile().as_text()
    assert _ours_in(text) == 0
    text = jax.jit(jax.vmap(lambda x: jopt.minimize(rosen, x).x)).lower(
        jnp.stack([x0, -x0])).compile().as_text()
    assert _ours_in(text) == 0


@pytest.mark.parametrize("method, bounded", [("l-bfgs-b", True), ("newton", False)])
def test_a_loop_the_emitter_cannot_take_keeps_the_usual_options(method, bounded):
    """The objective passes, the method's own loop does not (L-BFGS-B sorts and factors,
    Newton factors): the program is compiled with the usual options for its size, not
    the outlined profile's older emitters, and holds no outlined call."""
    x0 = jnp.linspace(-1.0, 1.0, 6)
    assert _outline(False, x0, rosen, ())  # the objective alone would be outlined
    fun = lambda x: rosen(x)  # noqa: E731  (a fresh program; alive while inspected)
    _ALIVE.append(fun)
    bounds = (jnp.full(6, -2.0), jnp.full(6, 2.0)) if bounded else None
    res = jopt.minimize(fun, x0, method=method, bounds=bounds)
    assert bool(res.success)
    run, config = _last_program()
    assert not config.outline
    assert config.profile == options.profile_for(6, batched=False, outline=False,
                                                 small_loops=None)
    box = () if bounds is None else (bounds,)
    text = run.lower(x0, box, *_tolerances(), api._no_limit()).compile().as_text()
    assert _ours_in(text) == 0
    # while L-BFGS on the same objective is one function
    jopt.minimize(fun, x0, method="lbfgs")
    assert _last_program()[1].outline


def test_outlinable_screens_jaxprs():
    def loop_of(f, *shapes):
        return jax.make_jaxpr(lambda *xs: jax.lax.fori_loop(0, 3, lambda i, v: f(v), xs[0]))(
            *[jnp.zeros(s) for s in shapes])

    assert outlinable(loop_of(lambda v: v * 2.0 + jnp.sum(v), (8,)))
    assert not outlinable(loop_of(lambda v: jnp.sort(v), (8,)))
    assert not outlinable(loop_of(lambda v: v.at[jnp.asarray([0, 1])].add(1.0), (8,)))
    assert not outlinable(loop_of(lambda v: v + jnp.sum(v), (5000,)))  # a 40 KB reduction
    # ... which a program compiled without YNNPACK fusions can take
    assert outlinable(loop_of(lambda v: v + jnp.sum(v), (5000,)), library_fusions=False)
    m = jnp.ones((4, 4))
    assert not outlinable(loop_of(lambda v: (v @ m) @ m.T, (4, 4)))  # a matrix product
    assert not outlinable(loop_of(lambda v: (v @ m) @ m.T, (4, 4)), library_fusions=False)
    with pytest.raises(TypeError, match="library_fusions"):
        outlinable(loop_of(lambda v: v, (4,)), library_fusions=1)
    assert outlinable(loop_of(lambda v: m @ v, (4,)))  # a matrix-vector product
    big = jnp.ones(1000)  # 8 KB closed over
    assert not outlinable(loop_of(lambda v: v + big[:8], (8,)))
    cb = lambda v: jax.pure_callback(lambda u: u, jax.ShapeDtypeStruct(v.shape, v.dtype), v)  # noqa: E731
    assert not outlinable(loop_of(cb, (8,)))


def test_refused_outline_falls_back_and_is_remembered(monkeypatch):
    """A loop the screen lets through but XLA:CPU's emitter refuses (here a small MLP's
    matrix products, which XLA gives to a library fusion when the program's options allow
    those, as minimize's own "cpu-outlined" options do not) is compiled the usual way."""
    rng = np.random.default_rng(1)
    data = jnp.asarray(rng.normal(size=(64, 8)))
    y = jnp.asarray(np.sin(rng.normal(size=64)))

    def loss(w, data, y):
        hidden = jnp.tanh(data @ w[:, :16])
        return jnp.mean((hidden @ w[0, 16:] - y) ** 2) + 1e-3 * jnp.sum(w**2)

    w0 = jnp.asarray(rng.normal(size=(8, 32)) * 0.3)
    monkeypatch.setattr(xla_cpu, "outlinable", lambda closed, **kw: True)
    monkeypatch.setattr(platform, "_objective_facts", lambda *a: (True, False))
    # library fusions on: options without the YNNPACK switch
    monkeypatch.setattr(options, "profile_for", lambda *a, **k: "cpu-small")
    res = jopt.minimize(loss, w0, args=(data, y), maxiter=200)  # it fell back
    assert platform._REFUSED.get(loss, platform._shapes_key(w0, (data, y)))
    assert not _outline(False, w0, loss, (data, y))
    again = jopt.minimize(loss, w0, args=(data, y), maxiter=200)  # planned without outlining
    assert not _last_program()[1].outline
    np.testing.assert_array_equal(again.x, res.x)
    monkeypatch.undo()
    ref = jopt.minimize(loss, w0, args=(data, y), maxiter=200)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-12)


@pytest.mark.parametrize("shape, index", [((5,), 0), ((5,), 4), ((4, 3), 2), ((3, 2, 2), 1)])
def test_set_row_is_at_set(shape, index):
    rng = np.random.default_rng(sum(shape) + index)
    a = jnp.asarray(rng.normal(size=shape))
    v = jnp.asarray(rng.normal(size=shape[1:]))
    got = jax.jit(set_row)(a, jnp.asarray(index), v)
    np.testing.assert_array_equal(got, a.at[index].set(v))
    assert got.dtype == a.dtype
    a32, v32 = a.astype(jnp.float32), v.astype(jnp.float32)
    np.testing.assert_array_equal(set_row(a32, index, v32), a32.at[index].set(v32))


def test_switch_turns_outlining_off_and_back(monkeypatch):
    x0 = jnp.linspace(-1.0, 1.0, 6)
    monkeypatch.setattr(xla_cpu, "_outline_enabled", None)
    monkeypatch.delenv("JOPT_OUTLINE_LOOPS", raising=False)
    assert xla_cpu.outline_solver_loops() and _outline(False, x0, rosen, ())
    monkeypatch.setenv("JOPT_OUTLINE_LOOPS", "0")
    assert not xla_cpu.outline_solver_loops() and not _outline(False, x0, rosen, ())
    assert xla_cpu.outline_solver_loops(True) and _outline(False, x0, rosen, ())
    assert not xla_cpu.outline_solver_loops(False)
    fun = lambda x: rosen(x)  # noqa: E731  (alive while its program is inspected)
    res = jopt.minimize(fun, x0)
    assert not _last_program()[1].outline and int(res.status) == jopt.Status.CONVERGED
    with pytest.raises(TypeError, match="enabled"):
        xla_cpu.outline_solver_loops("no")
