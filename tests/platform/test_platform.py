"""The platform layer: the only place that knows a backend; probed, cached, and falling
back to the plain path (never an exception) when this jax/jaxlib lacks a feature."""

from __future__ import annotations

import ast
import json
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt import _platform as platform

ROOT = pathlib.Path(jopt.__file__).parent
BACKEND_KNOWLEDGE = re.compile(
    r"^\s*(import|from) jax\.(_src|experimental)|default_backend\(|[\"']xla_|"
    r"compiler_options\s*=", re.MULTILINE)


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def test_no_backend_knowledge_outside_the_platform_layer():
    leaks = [str(path.relative_to(ROOT)) for name, path in _modules().items()
             if not name.startswith("jopt._platform")
             and BACKEND_KNOWLEDGE.search(path.read_text())]
    assert leaks == []


def _imports(path: pathlib.Path, name: str) -> set[str]:
    """jopt modules ``path`` imports (relative to package ``name``'s parent)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "jopt" or m.startswith("jopt.")}


def _reachable(start: str, modules: dict[str, pathlib.Path]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        todo.extend(_imports(modules[name], name))
    return seen


@pytest.mark.parametrize("layer", ["jopt.transforms", "jopt.calculus", "jopt.tree",
                                   "jopt.linesearch", "jopt.step", "jopt.linalg",
                                   "jopt.solve.loop"])
def test_lower_layers_import_nothing_of_the_platform(layer):
    modules = _modules()
    starts = [m for m in modules if m == layer or m.startswith(layer + ".")]
    reached = set().union(*(_reachable(m, modules) for m in starts))
    assert not any(m.startswith("jopt._platform") for m in reached), sorted(reached)
    assert "jopt" not in reached  # (the package's __init__ imports everything)


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jopt"):
                private = [a.name for a in node.names  # (a private module is a layer)
                           if a.name.startswith("_") and not a.name.startswith("__")
                           and f"{node.module}.{a.name}" not in modules]
                if private:
                    offenders.append((name, node.module, private))
    assert offenders == []


def test_the_state_has_one_structure_under_both_policies():
    x0 = jnp.asarray([-1.2, 1.0, 0.5])
    rosen = lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)  # noqa: E731
    try:
        for method in ("lbfgs", "bfgs", "trust-ncg"):  # (the states that once differed)
            jopt.platform_policy("auto")
            auto = jopt.minimize_init(rosen, x0, method=method)
            auto = jopt.minimize_run(rosen, auto, method=method, num_steps=5)
            jopt.platform_policy("generic")
            assert platform.plan(rosen, x0, (), nested=False) == platform.GENERIC
            generic = jopt.minimize_init(rosen, x0, method=method)
            assert jax.tree.structure(auto) == jax.tree.structure(generic)
            # saved under one policy, continued under the other
            done = jopt.minimize_result(jopt.minimize_run(rosen, auto, method=method))
            ref = jopt.minimize(rosen, x0, method=method)
            assert bool(done.success) and bool(ref.success)
            np.testing.assert_allclose(done.x, ref.x, atol=1e-6)
    finally:
        jopt.platform_policy("auto")


def test_policy_switch_is_checked():
    with pytest.raises(ValueError, match="policy"):
        jopt.platform_policy("gpu")


# One method of each kind of loop (line search, trust region on HVPs, dense Newton solves,
# bounds): the platform layer wraps the loop and knows nothing of the method, and the
# battery runs every method under both policies in-process (tests/test_battery.py).
_METHODS = ("lbfgs", "trust-ncg", "newton", "l-bfgs-b")

_SOLVE_ALL = f"METHODS = {_METHODS!r}\n" + """
import json, warnings
warnings.simplefilter("always")
caught = []
with warnings.catch_warnings(record=True) as caught:
    import jax, jax.numpy as jnp, jopt
    jax.config.update("jax_enable_x64", True)
    rosen = lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    out = {}
    for m in METHODS:
        r = jopt.minimize(rosen, jnp.asarray([-1.2, 1.0, -1.2, 1.0]), method=m, tol=1e-8)
        out[m] = [bool(r.success), [float(v) for v in r.x]]
jopt_warnings = [str(w.message) for w in caught if issubclass(w.category, jopt.JoptWarning)]
print(json.dumps({"solved": out, "warnings": jopt_warnings}))
"""


def _run(prelude: str, env: dict | None = None) -> dict:
    code = textwrap.dedent(prelude) + _SOLVE_ALL
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_all_solved(out: dict) -> None:
    for method, (success, x) in out["solved"].items():
        assert success, method
        np.testing.assert_allclose(x, np.ones(4), atol=1e-6, err_msg=method)


def test_without_the_experimental_metadata_api_everything_still_solves():
    out = _run("""
        import sys
        sys.modules["jax.experimental.xla_metadata"] = None  # its import now fails
    """)
    _check_all_solved(out)
    assert len(out["warnings"]) <= 1


def test_a_compiler_refusing_every_xla_cpu_option_still_solves():
    out = _run("""
        import jax
        _jit = jax.jit

        def refusing_jit(fun, *args, compiler_options=None, **kwargs):
            if compiler_options and any(k.startswith("xla_cpu") for k in compiler_options):
                def refuse(*a, **k):
                    raise jax.errors.JaxRuntimeError(
                        "INVALID_ARGUMENT: No such compile option: 'xla_cpu_...'")
                refuse.lower = lambda *a, **k: refuse()
                return refuse
            return _jit(fun, *args, compiler_options=compiler_options, **kwargs)

        jax.jit = refusing_jit
    """)
    _check_all_solved(out)
    assert len(out["warnings"]) <= 1, out["warnings"]


def test_generic_policy_from_the_environment():
    import os

    env = {**os.environ, "JOPT_PLATFORM": "generic"}
    out = _run("", env=env)
    _check_all_solved(out)
    assert out["warnings"] == []
