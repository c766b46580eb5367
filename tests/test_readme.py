"""The README's Python blocks run, in order, in one namespace (what a reader pastes)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    # The quick starts' claims: Adam fitted the data, BFGS and Newton-CG converged.
    assert float(namespace["loss"](namespace["params"], namespace["X"], namespace["y"])) < 1e-2
    assert bool(namespace["res"].success)
    assert np.all(np.isfinite(np.asarray(namespace["dw_dlam"])))
    np.testing.assert_allclose(namespace["popt"], [3.0, 0.7], rtol=0.05)
    assert bool(namespace["fit"].success)
