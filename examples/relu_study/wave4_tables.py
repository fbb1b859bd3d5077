"""The wave-4/5 tables of examples/relu_study/REPORT.md from one `krenorm compare` or
`krenorm report` output directory: per sampled point δ = ε_g(network) − ε_g(theory at N) ± the
network's SE, R̂ and ESS of the test loss, and per problem (architecture, mask) the 1/N fit
δ(N) = δ∞ + c/N (krenorm.experiments.agreement, docs/math/theory.md §6). With the results store
as a second argument, also the chain settings and CPU seconds of every sampled point.

    python examples/relu_study/wave4_tables.py examples/relu_study/wave5_mnist/results.json \
        [runs/relu_mnist/results.sqlite]

For problems sampled at four or more widths it also prints the fits over the widths from
N_min up, straight line (δ∞ + c/N) and next order (δ∞ + c/N + d/N²), so that curvature in 1/N
can be told from a residual at N → ∞ (docs/sweeps.md, "Networks against the theory").
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from krenorm.experiments.agreement import InverseWidthFit, fit_inverse_width

#: R̂ and ESS of the test loss a point must reach to count as mixed (the wave-5 bar).
RHAT_BAR = 1.1
ESS_BAR = 100.0


def _signed(value: float | None, digits: int = 4) -> str:
    if value is None:  # e.g. no theory at N = ∞ in the store yet
        return "–"
    text = f"{value:+.{digits}f}"
    if float(text) == 0.0:  # no sign on a value that rounds to zero ("−0.0000")
        return f"{0.0:.{digits}f}"
    return text.replace("-", "−")


def point_table(payload: dict) -> None:
    """Per sampled point: ESS, R̂ (✗ below the bar), network ± SE, theory, δ, vs N = ∞."""
    health = {row["spec_hash"]: row["network"]["diagnostics"] for row in payload["rows"]
              if row.get("network")}
    print("| problem | N | ESS | R̂ | network ε_g ± SE | theory (N) | δ ± SE (z) | vs ∞ (z) |")
    print("|---|---|---|---|---|---|---|---|")
    for problem in payload["problems"]:
        for point in problem["points"]:
            diagnostics = health[point["spec_hash"]]
            flag = ("" if diagnostics["rhat"] <= RHAT_BAR and diagnostics["ess"] >= ESS_BAR
                    else " ✗")
            print(f"| {problem['label']} | {point['width']:g} | {diagnostics['ess']:.0f} | "
                  f"{diagnostics['rhat']:.3f}{flag} | {point['network']:.4f} ± "
                  f"{point['stderr']:.4f} | {point['theory']:.4f} | "
                  f"{_signed(point['deviation'])} ± {point['stderr']:.4f} "
                  f"({_signed(point['z'], 1)}) | {_signed(point['deviation_infinite'], 3)} "
                  f"({_signed(point['z_infinite'], 1)}) |")


def fit_table(payload: dict) -> None:
    """Per problem: δ∞ ± SE (z), the 1/N coefficient c ± SE and χ²/dof of δ(N) = δ∞ + c/N."""
    print("| problem | widths | δ∞ ± SE (z) | c (slope of 1/N) ± SE | χ²/dof (p) | δ∞ = 0? |")
    print("|---|---|---|---|---|---|")
    for problem in payload["problems"]:
        fit = problem["fit"]
        if fit.get("delta_infinity") is None:
            print(f"| {problem['label']} | {fit.get('widths')} | – | – | – | "
                  f"{fit['status']} |")
            continue
        widths = ", ".join(f"{width:g}" for width in fit["widths"])
        chi2 = (f"{fit['chi2']:.2f}/{fit['dof']}" if fit["dof"] else "– (2 widths)")
        if fit.get("p_value") is not None:
            chi2 += f" ({fit['p_value']:.2f})"
        print(f"| {problem['label']} | {widths} | {_signed(fit['delta_infinity'])} ± "
              f"{fit['delta_infinity_stderr']:.4f} ({_signed(fit['z'], 1)}) | "
              f"{_signed(fit['slope'], 3)} ± {fit['slope_stderr']:.3f} | {chi2} | "
              f"{'yes' if fit['consistent_with_zero'] else 'no'} |")


def _fit_cell(fit: InverseWidthFit) -> str:
    if fit.delta_infinity is None or fit.delta_infinity_stderr is None or fit.z is None:
        return f"– ({fit.status})"
    text = (f"{_signed(fit.delta_infinity)} ± {fit.delta_infinity_stderr:.4f} "
            f"({_signed(fit.z, 1)}σ)")
    if fit.p_value is None:
        return text + f", {fit.status}"
    return text + f", χ² {fit.chi2:.2f}/{fit.dof} (p = {fit.p_value:.2g})"


def fit_scan_table(payload: dict, minimum_widths: int = 4) -> None:
    """Per problem with at least `minimum_widths` widths: δ∞ from the straight line and from
    the next-order fit over the widths N ≥ N_min, for every sampled N_min that leaves a fit."""
    print("| problem | widths used | δ∞ + c/N: δ∞ ± SE (z), χ² | δ∞ + c/N + d/N²: δ∞ ± SE (z), "
          "χ² |")
    print("|---|---|---|---|")
    for problem in payload["problems"]:
        points = problem["points"]
        widths = sorted({point["width"] for point in points})
        if len(widths) < minimum_widths:
            continue
        for smallest in widths[:-1]:
            used = [point for point in points if point["width"] >= smallest]
            columns = ([p["width"] for p in used], [p["deviation"] for p in used],
                       [p["stderr"] for p in used])
            line = fit_inverse_width(*columns)
            curved = (fit_inverse_width(*columns, order=2)
                      if len({p["width"] for p in used}) >= 3 else None)
            listed = ", ".join(f"{width:g}" for width in widths if width >= smallest)
            print(f"| {problem['label']} | {listed} | {_fit_cell(line)} | "
                  f"{'–' if curved is None else _fit_cell(curved)} |")


def chain_table(db: str) -> None:
    """Per sampled point of the store: sampler settings, wall and CPU seconds; then the CPU
    seconds of all sampled points and of all theory points."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "select spec_json, seconds, diagnostics_json from experiments "
            "where status = 'done'").fetchall()
    print("| arch | mask/stride | N | L | replicas × steps (burn-in) | wall s | CPU s |")
    print("|---|---|---|---|---|---|---|")
    totals = {"network": 0.0, "theory": 0.0}
    for spec_json, seconds, diagnostics_json in sorted(rows):
        spec, diagnostics = json.loads(spec_json), json.loads(diagnostics_json)
        cpu = float(diagnostics.get("cpu_seconds") or 0.0)
        network = spec.get("network")
        totals["network" if network else "theory"] += cpu
        if not network:
            continue
        arch = spec["architecture"]
        print(f"| {arch['kind']} | {arch['mask'][0]}/{arch['stride'][0]} | {spec['width']:g} | "
              f"{network['leapfrog_steps']} | {network['n_replicas']} × {network['n_steps']} "
              f"({network['burn_in']}) | {seconds:.0f} | {cpu:.0f} |")
    print(f"\nCPU s: sampled networks {totals['network']:.0f}, theory {totals['theory']:.0f}")


def main(path: str, db: str | None = None) -> None:
    payload = json.loads(Path(path).read_text())
    point_table(payload)
    print()
    fit_table(payload)
    print()
    fit_scan_table(payload)
    if db is not None:
        print()
        chain_table(db)


if __name__ == "__main__":
    main(*sys.argv[1:3])
