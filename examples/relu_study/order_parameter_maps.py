"""Q̄ and R = (1 + Q)⁻¹ of the ReLU CNN/LCN theory (docs/math/theory.md §3.6) beside the sampled
networks' readout moments (λ1/N) Σ_k ⟨a_k a_kᵀ⟩, at one sampled width (default N = 25) of
each architecture of one compare run.

    python examples/relu_study/order_parameter_maps.py runs/relu_mnist/results.sqlite \
        examples/relu_study/mnist_order_parameters.png [WIDTH]

Reads the networks' moments from the results store, refits the theory on the same data (the
data spec stored with each point) and prints the numbers the report quotes.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.data.loader import load_dataset
from krenorm.theory.fit import fit_theory


def _network_points(db: str) -> list[tuple[dict, dict]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "select spec_json, diagnostics_json from experiments where status = 'done' and "
            "json_extract(diagnostics_json, '$.network.q_matrix') is not null").fetchall()
    return [(json.loads(spec), json.loads(diagnostics)["network"]) for spec, diagnostics in rows]


def main(db: str, out: str, width: float = 25.0) -> None:
    torch.set_num_threads(1)
    points = _network_points(db)
    smallest: dict[tuple, tuple[dict, dict]] = {}
    for spec, network in points:
        arch = spec["architecture"]
        key = (arch["kind"], tuple(arch["mask"]), tuple(arch["stride"]))
        if spec["width"] == width:
            smallest[key] = (spec, network)
    keys = sorted(smallest)
    figure, axes = plt.subplots(len(keys), 3, figsize=(12, 3.6 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        spec, network = smallest[key]
        data_spec = spec["data"]
        options = dict(data_spec["options"])
        data = load_dataset(data_spec["dataset"], classes=tuple(options.pop("classes")),
                            n_train=data_spec["n_train"], n_test=data_spec["n_test"],
                            seed=data_spec["seed"], **options)
        arch = spec["architecture"]
        architecture = ArchitectureSpec(arch["kind"], arch["activation"], mask=arch["mask"],
                                        stride=arch["stride"], padding=arch["padding"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_theory(data.x_train, data.y_train, architecture, spec["width"],
                             spec["temperature"], spec["lambda0"], spec["lambda1"])
        structure = fit.structure
        q_bar = structure.q_bar(fit.point).numpy()
        resolvent = structure.resolvent(structure.conjugate_field(fit.point)).numpy()
        moment = np.asarray(network["q_matrix"]["values"], dtype=float)
        stderr = np.asarray(network["q_matrix_stderr"]["values"], dtype=float)
        if arch["kind"] == "lcn":
            side = math.isqrt(q_bar.size)
            panels = [q_bar.reshape(side, side), resolvent.reshape(side, side),
                      np.diag(moment).reshape(side, side)]
            names = [r"theory $\bar q_i$", r"theory $1/(1 + q_i)$",
                     r"network $(\lambda_1/N)\sum_k\langle a_{ki}^2\rangle$"]
        else:
            panels = [q_bar, resolvent, moment]
            names = [r"theory $\bar Q$", r"theory $(1 + Q)^{-1}$",
                     r"network $(\lambda_1/N)\sum_k\langle a_k a_k^\top\rangle$"]
        low = min(float(p.min()) for p in panels)
        high = max(float(p.max()) for p in panels)
        label = (f"{arch['kind']} mask {arch['mask'][0]} stride {arch['stride'][0]}, "
                 f"N = {spec['width']:g}")
        for column, (panel, name) in enumerate(zip(panels, names, strict=True)):
            axis = axes[row][column]
            image = axis.imshow(panel, cmap="viridis", vmin=low, vmax=high)
            axis.set_title(f"{name}\n{label}", fontsize=8)
            axis.set_xlabel("patch j" if arch["kind"] == "cnn" else "patch column")
            axis.set_ylabel("patch i" if arch["kind"] == "cnn" else "patch row")
            # one tick per patch (integer positions, not imshow's half-integer default)
            axis.set_xticks(range(panel.shape[1]))
            axis.set_yticks(range(panel.shape[0]))
            axis.tick_params(labelsize=6 if panel.shape[0] > 8 else 8)
            plt.colorbar(image, ax=axis, fraction=0.046)
        diag = np.diag(moment)
        q_diag = np.diag(q_bar) if q_bar.ndim == 2 else q_bar
        r_diag = np.diag(resolvent) if resolvent.ndim == 2 else resolvent
        off = moment[~np.eye(len(diag), dtype=bool)]
        print(f"{label}: converged={fit.diagnostics.converged} is_saddle="
              f"{fit.diagnostics.is_saddle} | theory diag Q̄ mean {q_diag.mean():.4f}, diag R "
              f"mean {r_diag.mean():.4f} | network diag mean {diag.mean():.4f} ± "
              f"{np.mean(np.diag(stderr)):.4f} (mean SE), off-diagonal mean {off.mean():.4f}")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(float(value) for value in sys.argv[3:4]))
