"""The documentation site (docs/) stays true to the code.

* The API reference (docs/api/*.md) documents every name in ``jopt.__all__`` — and every
  name in the ``__all__`` of the modules it exports (``jopt.compress``,
  ``jopt.distributed``) — with an autodoc directive, and documents nothing that is not
  exported.
* Every ``python`` code block of the guides runs, page by page in a fresh interpreter
  (the blocks of a page share one namespace, as a reader runs them), and each line
  ``print(...)  # -> TEXT`` prints exactly ``TEXT``. A block that imports an optional
  peer (scipy, optimistix, jaxopt, ...) is left out where that peer is not installed (no
  later block may depend on it).

The user guide's pages (docs/user-guide/) show fragments with placeholders (``fun``,
``x0``, ``batches``) and are not run; every name they use is in the API reference.

The HTML build itself (``make docs``: Sphinx with warnings as errors) is not run here.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jopt

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.md"))
GUIDES = [*sorted((DOCS / "guides").glob("*.md")), DOCS / "index.md", DOCS / "protocol.md"]

DIRECTIVE = re.compile(
    r"^\.\. auto(function|class|module|exception|data)::\s+(jopt(?:\.[A-Za-z_]\w*)+)\s*$",
    re.MULTILINE)
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXPECT = re.compile(r"^\s*print\(.*\)\s*# -> (.*)$")
OPTIONAL = ("scipy", "optimistix", "jaxopt", "sklearn", "matplotlib")


def _documented() -> dict[str, str]:
    """``{"jopt.name": directive}`` over every autodoc directive of the API pages."""
    found: dict[str, str] = {}
    for page in API_PAGES:
        for kind, name in DIRECTIVE.findall(page.read_text()):
            assert name not in found, f"{name} is documented twice ({page.name})"
            found[name] = kind
    return found


def _exported() -> set[str]:
    """Every public name: ``jopt.X`` for X in ``jopt.__all__``, and ``jopt.M.Y`` for each
    exported module ``M`` and Y in its ``__all__``."""
    names = set()
    for name in jopt.__all__:
        names.add(f"jopt.{name}")
        obj = getattr(jopt, name)
        if inspect.ismodule(obj):
            names.update(f"jopt.{name}.{sub}" for sub in obj.__all__)
    return names


def test_api_pages_exist():
    assert len(API_PAGES) >= 2, "docs/api/*.md not found"


def test_api_reference_covers_every_public_name():
    documented = set(_documented())
    missing = sorted(_exported() - documented)
    assert not missing, (f"names in __all__ with no autodoc directive in docs/api/: {missing}"
                         f" — add `.. autofunction::`/`.. autoclass::` lines for them")


def test_api_reference_documents_only_public_names():
    extra = sorted(set(_documented()) - _exported())
    assert not extra, f"docs/api/ documents names outside __all__: {extra}"


def test_api_directives_match_kinds():
    for name, kind in _documented().items():
        obj = jopt
        for part in name.split(".")[1:]:
            obj = getattr(obj, part)
        if kind == "module":
            assert inspect.ismodule(obj), name
        elif kind in ("class", "exception"):
            assert inspect.isclass(obj), name
        elif kind == "function":
            assert callable(obj) and not inspect.isclass(obj), name


def _missing_optional(block: str) -> str | None:
    """The optional module ``block`` imports that is not installed, if any."""
    for module in OPTIONAL:
        if re.search(rf"^\s*(import|from)\s+{module}\b", block, re.MULTILINE) and \
                importlib.util.find_spec(module) is None:
            return module
    return None


def _page_script(page: Path) -> tuple[str, list[str], list[str]]:
    """The page's runnable blocks joined, the expected printed lines, and the optional
    modules whose blocks were left out."""
    blocks, left_out = [], []
    for block in FENCE.findall(page.read_text()):
        missing = _missing_optional(block)
        if missing is None:
            blocks.append(block)
        else:
            left_out.append(missing)
    script = "\n\n".join(blocks)
    expected = [m.group(1).rstrip() for line in script.splitlines()
                if (m := EXPECT.match(line))]
    return script, expected, left_out


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.stem)
def test_guide_code_runs_and_prints_what_it_says(page):
    script, expected, _ = _page_script(page)
    if not script.strip():
        pytest.skip("no python blocks (or all need optional modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{page.name}: the code blocks failed:\n{out.stderr[-4000:]}"
    printed = [line.rstrip() for line in out.stdout.splitlines()]
    assert printed == expected, (f"{page.name}: printed\n" + "\n".join(printed) +
                                 "\nbut the page says\n" + "\n".join(expected))
