"""Sphinx configuration for jopt's documentation.

Build (warnings are errors)::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import jopt  # noqa: E402

project = "jopt"
author = "jopt developers"
copyright = "jopt developers"
release = jopt.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: $...$ / $$...$$ math, amsmath environments, ::: fences, anchors for ## headings
# (benchmarks/RESULTS.md links to its own sections).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc + napoleon: the code's docstrings are Google style.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, not a second description of each field
napoleon_use_rtype = False
napoleon_attr_annotations = False  # jax.Array would print as jax.jaxlib._jax.Array
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# Show these annotation aliases by name (api/index.md says what each stands for) instead
# of their expansion (``ScalarOrSchedule`` expands to optax's long ``Schedule`` union).
autodoc_type_aliases = {name: name for name in (
    "PyTree", "ScalarOrSchedule", "MaskOrFn", "LeafSelector", "Bits", "BlockSizes")}


def _alias_repr(self) -> str:
    return self.name


# Sphinx 9 prints an alias inside a union (``PyTree | None``) by its repr,
# ``TypeAliasForwardRef('PyTree')``; print the name instead.
from sphinx.util.inspect import TypeAliasForwardRef  # noqa: E402

TypeAliasForwardRef.__repr__ = _alias_repr
add_module_names = False
python_display_short_literal_types = True


def _skip_member(app, what, name, obj, skip, options):
    """Leave out NamedTuple field aliases ("Alias for field number N"): the class's own
    docstring describes its fields."""
    doc = getattr(obj, "__doc__", None) or ""
    if doc.startswith("Alias for field number"):
        return True
    if name in {"count", "index"} and what == "class":  # tuple's own methods
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)


html_theme = "furo"
html_title = f"jopt {release}"
html_static_path: list[str] = []
html_theme_options = {"navigation_with_keys": True}
