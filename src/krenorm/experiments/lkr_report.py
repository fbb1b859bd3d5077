"""Figures and tables of the LKR study (`lkr_study`) and of its sampled networks (the compare run
of examples/lkr_question.toml), written next to a hand-written REPORT.md (docs/selection.md §4).

    python -m krenorm.experiments.lkr_report STUDY_JSON... [COMPARE.toml...] --runs runs/X --out DIR
        (COMPARE.toml: compare configs whose points, read from DIR/networks_<name>.json, are
        marked on the maps)
    python -m krenorm.experiments.lkr_report --slice STUDY.json --out DIR
        (Δ(N) against the width for a study run at a few widths, e.g. P = 2000: STUDY.png)
    python -m krenorm.experiments.lkr_report --one-loop CONFIG.toml --out DIR
        (the one-loop correction at the sampled points of DIR/networks_<name>.json,
        docs/selection.md §5)
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter
from scipy import optimize

from krenorm.architectures import ArchitectureSpec
from krenorm.data import load_dataset
from krenorm.experiments.agreement import compare_networks, describe_fit, fit_inverse_width
from krenorm.experiments.rows import result_rows
from krenorm.experiments.store import ResultsStore
from krenorm.theory.one_loop import kernel_family, one_loop_test_loss
from krenorm.theory.selection import patch_kernels, readout_prior_loss
from krenorm.width import is_infinite

__all__ = ["gap_maps", "headline", "network_marks", "network_points", "one_loop_gaps",
           "q_bar_maps", "width_slice"]


def headline(study: dict[str, Any], out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """min over the λ1 grid of ε_g(N) minus the infinite-width oracle, against α, per T: does
    the best finite-width network beat the best infinite-width one?"""
    settings = study["settings"]
    cases = study["cases"]
    kinds = [kind for kind in settings["architectures"] if kind in cases[0]]
    figure, axes = plt.subplots(1, len(cases), figsize=(4.6 * len(cases), 3.8), squeeze=False,
                                layout="constrained", sharey=True)
    rows = []
    for axis, case in zip(axes[0], cases, strict=True):
        for k, kind in enumerate(kinds):
            for m, temperature in enumerate(settings["temperatures"]):
                infinite = case[kind]["infinite"][str(temperature)]
                gaps = []
                for alpha in settings["alphas"]:
                    finite = case[kind]["finite"]
                    losses = {lam: finite[f"{temperature}|{lam}|{alpha}"]["test_loss"]
                              for lam in settings["lambda1s"]
                              if f"{temperature}|{lam}|{alpha}" in finite}
                    best = min(losses, key=losses.__getitem__)
                    gap = losses[best] - infinite["oracle_loss"]
                    gaps.append(gap)
                    rows.append({"case": case["case"]["name"], "architecture": kind,
                                 "temperature": temperature, "alpha": alpha,
                                 "best_lambda1": best, "finite": losses[best],
                                 "oracle": infinite["oracle_loss"],
                                 "oracle_lambda1": infinite["oracle_lambda1"],
                                 "per_patch": infinite["per_patch_test_loss"], "gap": gap})
                axis.plot(settings["alphas"], gaps, marker="os"[k], ls=["-", "--"][k],
                          color=f"C{m}", label=f"{kind.upper()}, T = {temperature:g}")
        axis.axhline(0.0, color="k", lw=0.8)
        # Linear within ±0.01 (the gains), logarithmic beyond (the large losses at T = 0.01).
        axis.set_yscale("symlog", linthresh=0.01)
        axis.grid(True, which="major", axis="y", lw=0.3)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("α = P/N")
        axis.set_title(case["case"]["name"].replace(", ", "\n", 1), fontsize=9)
    axes[0][0].set_ylabel("min_λ1 ε_g(N) − min_λ1 ε_g(∞)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    path = out / "headline.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path, rows


def width_slice(study: dict[str, Any], out: Path, name: str = "width_slice"
                ) -> tuple[Path, list[dict[str, Any]]]:
    """Δ(N) = ε_g(N; T, λ1) − min_s ε_g(∞; T, s) against the width N, one line per λ1 of the
    grid, per architecture (one panel each) and temperature, for the first case of a study run
    at a few widths (e.g. P = 2000, N = 25–400): where the finite-width theory beats the best
    single-prior infinite width (Δ < 0), and the per-patch-prior baseline beside it."""
    settings = study["settings"]
    case = study["cases"][0]
    kinds = [kind for kind in settings["architectures"] if kind in case]
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.8 * len(kinds), 3.9), squeeze=False,
                                layout="constrained", sharey=True)
    rows: list[dict[str, Any]] = []
    n_train = case["shape"][0]
    widths = sorted({entry["width"] for kind in kinds for entry in case[kind]["finite"].values()})
    for axis, kind in zip(axes[0], kinds, strict=True):
        for m, temperature in enumerate(settings["temperatures"]):
            infinite = case[kind]["infinite"][str(temperature)]
            for k, lambda1 in enumerate(settings["lambda1s"]):
                points = sorted((entry["width"], entry["test_loss"] - infinite["oracle_loss"],
                                 entry["converged"])
                                for entry in case[kind]["finite"].values()
                                if entry["temperature"] == temperature
                                and entry["lambda1"] == lambda1)
                rows += [{"architecture": kind, "temperature": temperature,
                          "lambda1": lambda1, "width": width, "gap": gap,
                          "converged": converged, "oracle": infinite["oracle_loss"],
                          "oracle_lambda1": infinite["oracle_lambda1"],
                          "per_patch": infinite["per_patch_test_loss"]}
                         for width, gap, converged in points]
                if points:
                    axis.plot([p[0] for p in points], [p[1] for p in points],
                              marker="osd^v"[k % 5], color=f"C{k}",
                              ls=["-", "--", ":"][m % 3],
                              label=f"λ1 = {lambda1:g}" + (
                                  f", T = {temperature:g}" if len(settings["temperatures"]) > 1
                                  else ""))
            per_patch = infinite["per_patch_test_loss"] - infinite["oracle_loss"]
            if kind != "fc":  # for FC one prior is the whole readout: per-patch = λ1 tuning
                axis.axhline(per_patch, color="C7", ls="-.", lw=1,
                             label=f"per-patch priors at N = ∞ ({per_patch:+.4f})")
            axis.set_title(f"{kind.upper()}: best ε_g(∞) = {infinite['oracle_loss']:.4f} "
                           f"(λ1* = {infinite['oracle_lambda1']:.3g})", fontsize=9)
        axis.axhline(0.0, color="k", lw=0.8)
        axis.set_xscale("log")
        axis.set_xticks(widths, [f"{w:g}" for w in widths])  # the computed widths only
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlim(min(widths) / 1.3, max(widths) * 1.3)
        axis.set_yscale("symlog", linthresh=0.01)
        axis.grid(True, which="major", axis="y", lw=0.3)
        axis.set_xlabel(f"width N (P = {n_train})")
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("ε_g(N) − min_λ1 ε_g(∞)   (< 0: finite width better)")
    figure.suptitle(f"{case['case']['name']}, T = "
                    f"{', '.join(f'{t:g}' for t in settings['temperatures'])}", fontsize=10)
    path = out / f"{name}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path, rows


def _gap_grid(entry: dict[str, Any], settings: dict[str, Any], alpha: float,
              baseline: str) -> np.ndarray:
    """Δ = ε_g(N) − baseline(T) on the (T rows, λ1 columns) grid."""
    temps, lams = settings["temperatures"], settings["lambda1s"]
    grid = np.full((len(temps), len(lams)), np.nan)
    for i, temperature in enumerate(temps):
        infinite = entry["infinite"][str(temperature)]
        reference = (infinite["oracle_loss"] if baseline == "oracle"
                     else min(infinite["oracle_loss"], infinite["per_patch_test_loss"]))
        for j, lambda1 in enumerate(lams):
            point = entry["finite"].get(f"{temperature}|{lambda1}|{alpha}")
            if point is not None:  # cases merged from runs with different λ1 grids
                grid[i, j] = point["test_loss"] - reference
    return grid


def network_marks(study: dict[str, Any], configs: list[Path], out: Path
                  ) -> dict[tuple[int, str, float, float, float], tuple[float, float, float]]:
    """Sampled-network points that fall on a map cell: (case index, kind, T, λ1, α) →
    (network − best λ1-tuned infinite width on the compare run's own test set, SE, N), read from
    each compare config and its out/networks_<name>.json (written by --runs)."""
    marks: dict[tuple[int, str, float, float, float], tuple[float, float, float]] = {}
    for config in configs:
        with open(config, "rb") as handle:
            setup = tomllib.load(handle)
        table = out / f"networks_{setup['name']}.json"
        if not table.exists():
            continue
        with open(table, encoding="utf-8") as handle:
            points = json.load(handle)["points"]
        data, hyper = setup["data"], setup["hyper"]
        for number, case in enumerate(study["cases"]):
            described = case["case"]
            if (described["dataset"] != data["dataset"]
                    or list(described["classes"]) != list(data["classes"])
                    or bool(described["grayscale"]) != bool(data.get("grayscale", False))
                    or described["side"] != data.get("side")):
                continue
            for point in points:
                alpha = data["n_train"] / point["width"]
                marks[(number, point["architecture"], float(hyper["temperature"]),
                       float(hyper["lambda1"]), alpha)] = (
                    point["network"] - point["best_infinite"], point["stderr"], point["width"])
    return marks


def gap_maps(study: dict[str, Any], out: Path,
             marks: dict[tuple[int, str, float, float, float], tuple[float, float, float]]
             | None = None) -> list[Path]:
    """One figure per case: Δ(T, λ1) for CNN and FC (rows) at each α (columns); cells where
    networks were sampled are framed and carry the networks' Δ ± SE (`network_marks`)."""
    marks = marks or {}
    settings = study["settings"]
    paths = []
    for number, case in enumerate(study["cases"]):
        kinds = [kind for kind in settings["architectures"] if kind in case]
        alphas = settings["alphas"]
        grids = {(kind, alpha): _gap_grid(case[kind], settings, alpha, "oracle")
                 for kind in kinds for alpha in alphas}
        largest = max(float(np.nanmax(np.abs(grid))) for grid in grids.values())
        most_negative = max(0.0, -min(float(np.nanmin(grid)) for grid in grids.values()))
        # Resolve the interesting (negative, small) side: the colour range is 3× the largest
        # gain, at least 0.03; larger losses saturate (the numbers are printed in each cell).
        bound = min(largest, max(0.03, 3 * most_negative))
        figure, axes = plt.subplots(len(kinds), len(alphas),
                                    figsize=(3.4 * len(alphas) + 1.5, 3.2 * len(kinds)),
                                    squeeze=False, layout="constrained")
        norm = TwoSlopeNorm(0.0, -bound, bound)
        image = None
        for row, kind in enumerate(kinds):
            for col, alpha in enumerate(alphas):
                axis = axes[row][col]
                grid = grids[(kind, alpha)]
                image = axis.imshow(grid, cmap="RdBu_r", norm=norm, origin="lower",
                                    aspect="auto")
                for (i, j), value in np.ndenumerate(grid):
                    mark = marks.get((number, kind, float(settings["temperatures"][i]),
                                      float(settings["lambda1s"][j]), float(alpha)))
                    if np.isfinite(value):
                        axis.text(j, i + (0.15 if mark else 0.0), f"{value:+.3f}",
                                  ha="center", va="center", fontsize=8)
                    if mark is not None:
                        axis.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False,
                                                 lw=2, edgecolor="k"))
                        axis.text(j, i - 0.2, f"net {mark[0]:+.4f}\n±{mark[1]:.4f}",
                                  ha="center", va="center", fontsize=6.5, fontweight="bold")
                axis.set_xticks(range(len(settings["lambda1s"])),
                                [f"{v:g}" for v in settings["lambda1s"]])
                axis.set_yticks(range(len(settings["temperatures"])),
                                [f"{v:g}" for v in settings["temperatures"]])
                axis.set_xlabel("λ1")
                if col == 0:
                    axis.set_ylabel("T")
                axis.set_title(f"{kind.upper()}, α = P/N = {alpha:g}", fontsize=10)
        assert image is not None
        figure.colorbar(image, ax=axes, extend="both",
                        label="ε_g(N) − min_λ1 ε_g(∞)  (<0: finite width better)")
        figure.suptitle(case["case"]["name"], fontsize=11)
        path = out / f"gap_map_{number}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def q_bar_maps(study: dict[str, Any], out: Path, temperature: float, lambda1: float,
               alpha: float) -> Path:
    """The CNN's Q̄ − 1 (Np×Np; 0 at infinite width) at one (T, λ1, α) per case."""
    cases = [case for case in study["cases"] if "cnn" in case]
    figure, axes = plt.subplots(1, len(cases), figsize=(4.6 * len(cases), 4.0), squeeze=False,
                                layout="constrained")
    for axis, case in zip(axes[0], cases, strict=True):
        q_bar = np.asarray(case["cnn"]["finite"][f"{temperature}|{lambda1}|{alpha}"]["q_bar"])
        change = q_bar - np.eye(q_bar.shape[0])
        bound = float(np.abs(change).max())
        image = axis.imshow(change, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound))
        axis.set_title(case["case"]["name"].replace(", ", "\n", 1), fontsize=9)
        axis.set_xlabel("patch j")
        axis.set_ylabel("patch i")
        figure.colorbar(image, ax=axis, label="Q̄_ij − δ_ij", shrink=0.8)
    figure.suptitle(f"CNN order parameter Q̄ − 1 at T = {temperature:g}, λ1 = {lambda1:g}, "
                    f"α = {alpha:g} (patches in raster order)", fontsize=11)
    path = out / "q_bar.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def _infinite_oracle(spec: ArchitectureSpec, data: Any, temperature: float) -> tuple[float, float]:
    """(min over λ1 of ε_g(∞) on the test set, that λ1) for the compare run's data."""
    blocks = patch_kernels(spec, torch.cat([data.x_train, data.x_test]), 1.0)
    n_train = data.x_train.shape[0]

    def loss(log_s: float) -> float:
        with torch.no_grad():
            return float(readout_prior_loss(
                torch.full((blocks.shape[0],), -float(log_s), dtype=torch.float64), blocks,
                n_train, data.y_train, data.y_test, temperature, 1.0))
    best = optimize.minimize_scalar(loss, bounds=(math.log(1e-3), math.log(1e3)),
                                    method="bounded")
    return float(best.fun), float(math.exp(best.x))


def network_points(runs: Path, out: Path) -> tuple[Path | None, list[str], list[dict[str, Any]]]:
    """Network ε_g ± SE against the finite- and infinite-width theory per architecture, the 1/N
    fits (describe_fit) and a table of the points; the best-tuned infinite width (λ1 oracle)."""
    store = ResultsStore(runs / "results.sqlite")
    rows = result_rows(store)
    report = compare_networks(rows)
    if not report.problems:
        return None, ["no sampled network has finished yet"], []
    sample = rows[0].spec
    data = load_dataset(sample.data.dataset, tuple(dict(sample.data.options)["classes"]),
                        sample.data.n_train, sample.data.n_test, seed=sample.data.seed)
    figure, axes = plt.subplots(1, len(report.problems),
                                figsize=(5.5 * len(report.problems), 4.2), squeeze=False,
                                layout="constrained")
    lines, table = [], []
    for axis, problem in zip(axes[0], report.problems, strict=True):
        key_rows = [row for row in rows if row.spec.problem_key() == problem.key
                    and row.network is None and row.theory is not None]
        theory = sorted((row.width, row.theory.test_loss) for row in key_rows
                        if row.theory is not None and not is_infinite(row.width))
        infinite = [row.theory.test_loss for row in key_rows
                    if row.theory is not None and is_infinite(row.width)]
        architecture = problem.key[1]
        oracle, oracle_lambda = _infinite_oracle(architecture, data, rows[0].spec.temperature)
        spec = rows[0].spec
        curve = [(0.0, infinite[0])] if infinite else []
        curve += [(1 / w, v) for w, v in sorted(theory, reverse=True)]
        if curve:
            axis.plot([x for x, _ in curve], [v for _, v in curve], "-", color="C0",
                      label="theory (finite N; N = ∞ at 1/N = 0)")
        if infinite:
            axis.axhline(infinite[0], color="C0", ls=":",
                         label=f"infinite width (λ1 = {spec.lambda1:g})")
        axis.axhline(oracle, color="C2", ls="--",
                     label=f"best infinite width (λ1 = {oracle_lambda:.2g})")
        axis.errorbar([1 / p.width for p in problem.points], [p.network for p in problem.points],
                      yerr=[p.stderr for p in problem.points], fmt="o", color="C3", capsize=3,
                      label="sampled networks ± SE")
        axis.set_xlabel("1/N")
        axis.set_ylabel("test loss ε_g")
        axis.set_title(f"{spec.data.dataset} P = {spec.data.n_train}, {problem.label}, "
                       f"T = {spec.temperature:g}, λ1 = {spec.lambda1:g}", fontsize=10)
        axis.legend(fontsize=7)
        lines.append(f"{problem.label}: {describe_fit(problem.fit)}")
        for point in problem.points:
            table.append({"architecture": problem.architecture, "width": point.width,
                          "network": point.network, "stderr": point.stderr,
                          "theory": point.theory, "infinite": point.infinite,
                          "best_infinite": oracle, "best_infinite_lambda1": oracle_lambda})
    path = out / f"networks_{runs.name}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path, lines, table


def one_loop_gaps(config: Path, out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The measured gap network − leading-order theory (± SE) against 1/N, next to the one-loop
    correction of krenorm.theory.one_loop (docs/math/theory.md §7) at the same points: does the
    Gaussian fluctuation of Q̄ account for the gap? Reads the compare config (data, T, λ0, λ1,
    architectures) and the points already written to out/networks_<name>.json by --runs.
    Experimental: the figure documents the comparison; it is not a prediction line."""
    with open(config, "rb") as handle:
        setup = tomllib.load(handle)
    with open(out / f"networks_{setup['name']}.json", encoding="utf-8") as handle:
        points = json.load(handle)["points"]
    options, hyper = setup["data"], setup["hyper"]
    data = load_dataset(options["dataset"], tuple(options["classes"]), options["n_train"],
                        options["n_test"], side=options.get("side"),
                        grayscale=options.get("grayscale", False),
                        standardize=options.get("standardize", "global"),
                        labels=options.get("labels", "pm1"), seed=options.get("seed", 0))
    kinds = [entry for entry in setup["architectures"]
             if any(point["architecture"] == entry["kind"] for point in points)]
    figure, axes = plt.subplots(1, len(kinds), figsize=(5.0 * len(kinds), 3.8), squeeze=False,
                                layout="constrained")
    table: list[dict[str, Any]] = []
    for axis, entry in zip(axes[0], kinds, strict=True):
        architecture = (ArchitectureSpec("fc", hyper["activation"]) if entry["kind"] == "fc"
                        else ArchitectureSpec(entry["kind"], hyper["activation"],
                                              entry["mask"], entry["stride"]))
        mine = sorted((p for p in points if p["architecture"] == entry["kind"]),
                      key=lambda p: -p["width"])  # wide first: warm starts
        family = kernel_family(architecture, data.x_train, data.x_test,
                               lambda0=hyper["lambda0"], lambda1=hyper["lambda1"])
        start = None
        corrections = []
        for point in mine:
            result = one_loop_test_loss(family, data.y_train, data.y_test,
                                        width=point["width"], temperature=hyper["temperature"],
                                        q_bar_start=start)
            start = result.q_bar
            corrections.append(result.correction)
            row = {"architecture": entry["kind"], "width": point["width"],
                   "network_minus_theory": point["network"] - point["theory"],
                   "stderr": point["stderr"], **result.to_dict()}
            del row["q_bar"], row["q_bar_std"]
            table.append(row)
        inverse = [1 / p["width"] for p in mine]
        gaps = [p["network"] - p["theory"] for p in mine]
        axis.errorbar(inverse, gaps, yerr=[p["stderr"] for p in mine], fmt="o", color="C3",
                      capsize=3, label="sampled networks − leading order (± SE)")
        axis.plot(inverse, corrections, "s--", color="C0",
                  label="one-loop correction (Q̄ fluctuations)")
        fit = fit_inverse_width([p["width"] for p in mine], gaps, [p["stderr"] for p in mine])
        if fit.slope is not None and fit.delta_infinity is not None:
            grid = np.linspace(0.0, max(inverse) * 1.05, 50)
            axis.plot(grid, fit.delta_infinity + fit.slope * grid, ":", color="C3",
                      label="fit δ∞ + c/N")
        axis.axhline(0.0, color="k", lw=0.8)
        axis.set_xlabel("1/N")
        axis.set_ylabel("ε_g − leading-order theory")
        axis.set_title(f"{options['dataset']} P = {options['n_train']}, {entry['kind'].upper()}, "
                       f"T = {hyper['temperature']:g}, λ1 = {hyper['lambda1']:g}", fontsize=9)
        axis.legend(fontsize=7)
    path = out / f"one_loop_{setup['name']}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    with open(out / f"one_loop_{setup['name']}.json", "w", encoding="utf-8") as handle:
        json.dump(table, handle, indent=1)
    return path, table


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else Path("lkr_report")
    out.mkdir(parents=True, exist_ok=True)
    studies = [arg for arg in argv if arg.endswith(".json")]
    merged: dict[str, Any] = {"settings": None, "cases": []}
    by_name: dict[tuple[str, str], dict[str, Any]] = {}
    for name in studies:  # files of the same case and P (e.g. a λ1 supplement) are merged
        with open(name, encoding="utf-8") as handle:
            study = json.load(handle)
        if merged["settings"] is None:
            merged["settings"] = dict(study["settings"])
        settings = merged["settings"]
        settings["lambda1s"] = sorted(set(settings["lambda1s"]) | set(study["settings"]
                                                                       ["lambda1s"]))
        for case in study["cases"]:
            key = (case["case"]["name"], str(case["shape"]))
            if key not in by_name:
                by_name[key] = case
                merged["cases"].append(case)
                continue
            for kind in settings["architectures"]:
                by_name[key][kind]["finite"].update(case[kind]["finite"])
    if "--slice" in argv:  # a study at a few widths (P = 2000): the Δ(N) figure, not the maps
        with open(argv[argv.index("--slice") + 1], encoding="utf-8") as handle:
            sliced = json.load(handle)
        name = Path(argv[argv.index("--slice") + 1]).stem
        _, slice_rows = width_slice(sliced, out, name)
        with open(out / f"{name}_rows.json", "w", encoding="utf-8") as handle:
            json.dump(slice_rows, handle, indent=1)
        return
    one_loop_config = argv[argv.index("--one-loop") + 1] if "--one-loop" in argv else None
    configs = [Path(arg) for arg in argv if arg.endswith(".toml") and arg != one_loop_config]
    if merged["cases"]:
        gap_maps(merged, out, network_marks(merged, configs, out))
        _, rows = headline(merged, out)
        with open(out / "headline.json", "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
        q_bar_maps(merged, out, 0.05, 16.0, max(merged["settings"]["alphas"]))
        with open(out / "study.json", "w", encoding="utf-8") as handle:
            json.dump(merged, handle, indent=1)
    if "--one-loop" in argv:
        one_loop_gaps(Path(argv[argv.index("--one-loop") + 1]), out)
    if "--runs" in argv:
        runs = Path(argv[argv.index("--runs") + 1])
        _, lines, table = network_points(runs, out)
        with open(out / f"networks_{runs.name}.json", "w", encoding="utf-8") as handle:
            json.dump({"fits": lines, "points": table}, handle, indent=1)
        print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
