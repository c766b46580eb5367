"""The speed table of a change: old code against new, measured in the same run.

Reads the records ``benchmarks/results/run_before_after.sh`` writes (the quasi-Newton and
Newton suites, old code pinned to one core and new code to the other at the same time,
then the new code under the generic platform policy) and prints one markdown table:

* L-BFGS's median steady time against scipy L-BFGS-B's (problems both solve);
* at n >= 1,000, the problems where jopt's L-BFGS is at or below optax / jaxopt /
  optimistix's L-BFGS (among those both solve);
* solved counts of L-BFGS, Newton-CG and trust-ncg;
* summed compile time (first call minus steady) of each jopt method;
* the median of new/old steady time per problem.

Usage::

    bash benchmarks/results/run_before_after.sh /path/to/old/checkout ba
    python -m benchmarks.before_after --tag ba [--md out.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

RESULTS = os.path.join(os.path.dirname(__file__), "results")
PEERS = ("optax-lbfgs", "jaxopt-lbfgs", "optx-lbfgs")


def load(path: str) -> dict[tuple[str, str], dict]:
    """``(problem, method) -> record`` of a JSON-lines file (missing file: empty)."""
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return {(r["problem"], r["method"]): r for r in map(json.loads, fh)}


def _solved(recs: dict, method: str) -> set[str]:
    return {p for (p, m), r in recs.items() if m == method and r.get("solved")}


def median_ratio(recs: dict, method: str, ref: str, min_n: int = 0) -> float | None:
    """Median of ``method``'s steady time over ``ref``'s, on problems both solve."""
    both = _solved(recs, method) & _solved(recs, ref)
    ratios = [recs[(p, method)]["steady_s"] / recs[(p, ref)]["steady_s"] for p in both
              if recs[(p, method)]["n"] >= min_n and recs[(p, ref)]["steady_s"]]
    return statistics.median(ratios) if ratios else None


def at_or_below(recs: dict, method: str, peer: str, min_n: int = 1000) -> tuple[int, int]:
    """``(count at or below, count compared)`` of ``method`` against ``peer``."""
    both = [p for p in _solved(recs, method) & _solved(recs, peer)
            if recs[(p, method)]["n"] >= min_n]
    wins = sum(recs[(p, method)]["steady_s"] <= recs[(p, peer)]["steady_s"] for p in both)
    return wins, len(both)


def compile_sum(recs: dict, method: str) -> float:
    return sum(max(r.get("compile_s") or 0.0, 0.0) for (_, m), r in recs.items() if m == method)


def new_over_old(old: dict, new: dict, method: str) -> float | None:
    common = _solved(old, method) & _solved(new, method)
    ratios = [new[(p, method)]["steady_s"] / old[(p, method)]["steady_s"] for p in common
              if old[(p, method)]["steady_s"]]
    return statistics.median(ratios) if ratios else None


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def _count(recs: dict, method: str) -> str:
    total = sum(1 for (_, m) in recs if m == method)
    return f"{len(_solved(recs, method))}/{total}" if total else "–"


def report(tag: str) -> str:
    """The markdown table for the records of ``tag``."""
    sets = {name: {**load(os.path.join(RESULTS, f"{tag}_{name}_qn.jsonl")),
                   **load(os.path.join(RESULTS, f"{tag}_{name}_newton.jsonl"))}
            for name in ("old", "new", "generic")}
    cols = ("old", "new", "generic")
    lines = ["| measure | before | after | after, generic policy |", "|---|---:|---:|---:|"]

    def row(label: str, fn) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(sets[c]) for c in cols) + " |")

    row("L-BFGS median steady time / scipy L-BFGS-B",
        lambda r: _fmt(median_ratio(r, "jopt-lbfgs", "scipy-lbfgsb")))
    row("… at n ≥ 1,000", lambda r: _fmt(median_ratio(r, "jopt-lbfgs", "scipy-lbfgsb", 1000)))
    for peer in PEERS:
        row(f"n ≥ 1,000: L-BFGS at or below {peer}",
            lambda r, peer=peer: "–" if not at_or_below(r, "jopt-lbfgs", peer)[1]
            else "{}/{}".format(*at_or_below(r, "jopt-lbfgs", peer)))
    for method in ("jopt-lbfgs", "jopt-newton-cg", "jopt-trust-ncg"):
        row(f"solved, {method}", lambda r, method=method: _count(r, method))
    for method in ("jopt-lbfgs", "jopt-newton-cg", "jopt-trust-ncg"):
        row(f"Σ compile s, {method}",
            lambda r, method=method: _fmt(compile_sum(r, method) or None, ".1f"))
    for method in ("jopt-lbfgs", "jopt-newton-cg", "jopt-trust-ncg"):
        lines.append(f"| median steady time after / before, {method} | 1 | "
                     f"{_fmt(new_over_old(sets['old'], sets['new'], method), '.3f')} | "
                     f"{_fmt(new_over_old(sets['old'], sets['generic'], method), '.3f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default="ba")
    ap.add_argument("--md", default=None)
    args = ap.parse_args(argv)
    text = report(args.tag)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
