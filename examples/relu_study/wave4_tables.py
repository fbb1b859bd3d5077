"""The wave-4 tables of examples/relu_study/REPORT.md from one `krenorm compare` output directory:
per sampled point δ = ε_g(network) − ε_g(theory at N) ± the network's SE, R̂ and ESS of the test
loss, and per problem (architecture, mask) the 1/N fit δ(N) = δ∞ + c/N
(krenorm.experiments.agreement, docs/math/theory.md §6).

    python examples/relu_study/wave4_tables.py examples/relu_study/wave4_mnist/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _signed(value: float | None, digits: int = 4) -> str:
    if value is None:  # e.g. no theory at N = ∞ in the store yet
        return "–"
    return f"{value:+.{digits}f}".replace("-", "−")


def main(path: str) -> None:
    payload = json.loads(Path(path).read_text())
    health = {row["spec_hash"]: row["network"]["diagnostics"] for row in payload["rows"]
              if row.get("network")}
    print("| problem | N | ESS | R̂ | network ε_g ± SE | theory (N) | δ ± SE (z) | vs ∞ (z) |")
    print("|---|---|---|---|---|---|---|---|")
    for problem in payload["problems"]:
        for point in problem["points"]:
            diagnostics = health[point["spec_hash"]]
            flag = "" if diagnostics["rhat"] <= 1.1 else " ✗"
            print(f"| {problem['label']} | {point['width']:g} | {diagnostics['ess']:.0f} | "
                  f"{diagnostics['rhat']:.3f}{flag} | {point['network']:.4f} ± "
                  f"{point['stderr']:.4f} | {point['theory']:.4f} | "
                  f"{_signed(point['deviation'])} ± {point['stderr']:.4f} "
                  f"({_signed(point['z'], 1)}) | {_signed(point['deviation_infinite'], 3)} "
                  f"({_signed(point['z_infinite'], 1)}) |")
    print()
    print("| problem | widths | δ∞ ± SE (z) | c (slope of 1/N) ± SE | χ²/dof (p) | δ∞ = 0? |")
    print("|---|---|---|---|---|---|")
    for problem in payload["problems"]:
        fit = problem["fit"]
        if fit.get("delta_infinity") is None:
            print(f"| {problem['label']} | {fit.get('widths')} | – | – | – | {fit['status']} |")
            continue
        widths = ", ".join(f"{width:g}" for width in fit["widths"])
        chi2 = (f"{fit['chi2']:.2f}/{fit['dof']}" if fit["dof"] else "– (2 widths)")
        if fit.get("p_value") is not None:
            chi2 += f" ({fit['p_value']:.2f})"
        print(f"| {problem['label']} | {widths} | {_signed(fit['delta_infinity'])} ± "
              f"{fit['delta_infinity_stderr']:.4f} ({_signed(fit['z'], 1)}) | "
              f"{_signed(fit['slope'], 3)} ± {fit['slope_stderr']:.3f} | {chi2} | "
              f"{'yes' if fit['consistent_with_zero'] else 'no'} |")


if __name__ == "__main__":
    main(sys.argv[1])
