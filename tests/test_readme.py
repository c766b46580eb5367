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
    # The quick starts' claims: Adam fitted the data, the solves converged, the boxes hold.
    assert float(namespace["loss"](namespace["params"], namespace["X"], namespace["y"])) < 1e-2
    assert bool(namespace["res"].success)  # (the last `res`: the bounded solve)
    w = np.asarray(namespace["res"].x["w"])
    assert np.all(w >= 0) and np.asarray(namespace["res"].active_mask["w"]).any()
    ws, caps = np.asarray(namespace["ws"]), np.asarray(namespace["caps"])
    assert ws.shape == (16, 8) and np.all((ws >= 0) & (ws <= caps[:, None]))
    assert np.all(np.isfinite(np.asarray(namespace["dw_dlam"])))
    np.testing.assert_allclose(namespace["popt"], [3.0, 0.7], rtol=0.05)
    assert bool(namespace["fit"].success)
