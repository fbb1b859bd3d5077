"""The CIFAR-10 CNN rows of the LKR study from one or several compare runs (e.g. the long chains
of lkr_question_cifar_long.toml at N = 25, 50 and lkr_question_cifar_long100.toml at N = 100,
or the data-seed-1 run), merged into one problem: per width the network ε_g ± SE, split-R̂,
ESS and τ of the test loss, δ = network − theory ± SE, network − best λ1-tuned infinite width
(the λ1 oracle on the run's own test set, as `lkr_report` computes it), and the weighted 1/N fit
δ = δ∞ + c/N of `krenorm.experiments.agreement` (REPORT.md, "CIFAR-10 networks").

    python examples/lkr_question/cifar_long.py OUT_NAME RUN_DIR[:N1,N2] [RUN_DIR[:N1,N2] ...]

(RUN_DIR:N1,N2 takes only the sampled networks at those widths from that run, e.g. the long
chains at N = 25, 50 of one run and N = 100 of another.)

writes examples/lkr_question/OUT_NAME.json and OUT_NAME.png.
"""

import json
import sqlite3
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from krenorm.data import load_dataset
from krenorm.experiments.agreement import compare_networks, describe_fit
from krenorm.experiments.lkr_report import _infinite_oracle
from krenorm.experiments.rows import result_rows
from krenorm.experiments.store import ResultsStore
from krenorm.width import is_infinite

HERE = Path(__file__).parent


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    name = argv[0]
    runs: list[Path] = []
    rows = []
    for arg in argv[1:]:
        folder, _, chosen = arg.partition(":")
        run = Path(folder)
        runs.append(run)
        keep = {float(w) for w in chosen.split(",")} if chosen else None
        rows += [row for row in result_rows(ResultsStore(run / "results.sqlite"))
                 if row.network is None or keep is None or float(row.width) in keep]
    report = compare_networks(rows)
    (problem,) = [p for p in report.problems if p.architecture == "cnn"]
    spec = rows[0].spec
    options = dict(spec.data.options)
    data = load_dataset(spec.data.dataset, tuple(options["classes"]), spec.data.n_train,
                        spec.data.n_test, seed=spec.data.seed)
    oracle, oracle_lambda = _infinite_oracle(
        next(r.spec.architecture for r in rows if r.architecture == "cnn"), data,
        spec.temperature)
    by_hash = {row.spec_hash: row for row in rows}
    cpu: dict[str, float] = {}  # the experiment's CPU seconds, from the stores' diagnostics
    for run in runs:
        with sqlite3.connect(f"file:{run / 'results.sqlite'}?mode=ro", uri=True) as db:
            for spec_hash, text in db.execute(
                    "SELECT spec_hash, diagnostics_json FROM experiments WHERE status = 'done'"):
                if text:
                    cpu[spec_hash] = json.loads(text).get("cpu_seconds")
    points = []
    for point in problem.points:
        row = by_hash[point.spec_hash]
        details = row.network.diagnostics if row.network is not None else {}
        settings = row.spec.network
        points.append({
            "width": point.width, "network": point.network, "stderr": point.stderr,
            "theory": point.theory, "infinite": point.infinite, "deviation": point.deviation,
            "z": point.z, "best_infinite": oracle, "best_infinite_lambda1": oracle_lambda,
            "network_minus_best_infinite": point.network - oracle,
            "rhat": details.get("rhat"), "ess": details.get("ess"),
            # τ of the test loss in steps: records over all replicas / ESS
            "tau": (settings.n_replicas * (settings.n_steps - settings.burn_in)
                    / details.get("thin", 1) / details["ess"]
                    if settings and details.get("ess") else None),
            "acceptance": details.get("acceptance"),
            "replicas": settings.n_replicas if settings else None,
            "steps": settings.n_steps if settings else None,
            "burn_in": settings.burn_in if settings else None,
            "sampler_seed": settings.seed if settings else None,
            "data_seed": row.spec.data.seed, "seconds": row.seconds,
            "cpu_seconds": cpu.get(point.spec_hash),
            "warnings": details.get("warnings"),
            "diagnostic_keys": sorted(details)})
    fit = problem.fit
    out = {"runs": argv[1:], "points": points, "fit": fit.to_dict(),
           "fit_text": describe_fit(fit), "best_infinite": oracle,
           "best_infinite_lambda1": oracle_lambda}
    with open(HERE / f"{name}.json", "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=1, default=float)
    print(json.dumps(out, indent=1, default=float))

    figure, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.0), layout="constrained")
    inverse = np.array([1 / p["width"] for p in points])
    theory_rows = sorted((r.width, r.theory.test_loss) for r in rows
                         if r.theory is not None and r.network is None
                         and r.architecture == "cnn")
    finite = [(w, v) for w, v in theory_rows if not is_infinite(w)]
    infinite = [v for w, v in theory_rows if is_infinite(w)]
    curve = ([(0.0, infinite[0])] if infinite else []) + [(1 / w, v) for w, v in
                                                          sorted(finite, reverse=True)]
    left.plot([x for x, _ in curve], [v for _, v in curve], "-", color="C0",
              label="theory (finite N; N = ∞ at 1/N = 0)")
    left.axhline(oracle, color="C2", ls="--",
                 label=f"best infinite width (λ1 = {oracle_lambda:.2g})")
    left.errorbar(inverse, [p["network"] for p in points], yerr=[p["stderr"] for p in points],
                  fmt="o", color="C3", capsize=3, label="sampled CNNs ± SE")
    left.set_xlabel("1/N")
    left.set_ylabel("test loss ε_g")
    left.legend(fontsize=7)
    right.errorbar(inverse, [p["deviation"] for p in points],
                   yerr=[p["stderr"] for p in points], fmt="o", color="C3", capsize=3,
                   label="network − theory ± SE")
    if fit.delta_infinity is not None and fit.slope is not None:
        grid = np.linspace(0.0, float(inverse.max()) * 1.05, 50)
        band = np.array([fit.stderr(x) for x in grid])
        line = fit.delta_infinity + fit.slope * grid
        right.plot(grid, line, ":", color="C3",
                   label=f"δ∞ + c/N: δ∞ = {fit.delta_infinity:+.4f} ± "
                         f"{fit.delta_infinity_stderr:.4f}, c = {fit.slope:.3f}")
        right.fill_between(grid, line - band, line + band, color="C3", alpha=0.15, lw=0)
    right.axhline(0.0, color="k", lw=0.8)
    right.set_xlabel("1/N")
    right.set_ylabel("ε_g(network) − ε_g(theory, N)")
    right.legend(fontsize=7)
    steps = ", ".join(f"N = {p['width']:g}: {p['replicas']} × {p['steps']}" for p in points)
    figure.suptitle(f"CIFAR-10 {' vs '.join(map(str, options['classes']))}, P = "
                    f"{spec.data.n_train}, data seed {spec.data.seed}, CNN, T = "
                    f"{spec.temperature:g}, λ1 = {spec.lambda1:g} ({steps})", fontsize=9)
    figure.savefig(HERE / f"{name}.png", dpi=110, bbox_inches="tight")
    plt.close(figure)


if __name__ == "__main__":
    main(sys.argv[1:])
