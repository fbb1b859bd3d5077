"""Drive deepbays 0.1.11's Langevin loop on a given network and data, and time it (issue 4).

deepbays samples one network at a time: per step `deepbays.NN.train` zeroes the gradients, runs
the forward pass, evaluates `regLoss` = ½Σ(f−y)² + ½λ0T|W|² + ½λ1T|a|² (float32), back-propagates,
and `LangevinOpt.step` applies θ ← θ − η∇regLoss + √(2ηT)ξ to every parameter. Its stationary law
is exp(−regLoss/T), the posterior of docs/math/theory.md §1 (docs/reference_deepbays.md has the
mapping).

Use from the sampling benchmark (inside .venv-ref, with benchmarks/reference on sys.path):

    from deepbays_langevin import build_network, langevin_steps_per_second
    net = build_network("cnn", width=50, mask=7, stride=7, seed=0)
    stats = langevin_steps_per_second(net, x, y, step_size=1e-3, temperature=0.1, n_steps=200)

or from the command line on the MNIST 0-vs-1 case data of deepbays_case.py:

    .venv-ref/bin/python benchmarks/reference/deepbays_langevin.py --p 500 --width 50 --steps 200

or, from the project's .venv (another interpreter), on a task saved with numpy.savez: arrays
x_train (P, 1, 28, 28), y_train (P,) or (P, 1), and scalars architecture ("fc"|"cnn"), width,
mask, stride, activation, temperature, lambda0, lambda1, step_size, n_steps; prints one JSON line:

    .venv-ref/bin/python benchmarks/reference/deepbays_langevin.py --task task.npz

`--threads` (default 1) sets torch's intra-op threads: with 2 threads on a busy 2-core machine
deepbays' small per-step operations spin-wait (about 30× fewer steps per second measured).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import torch

INPUT_SIDE = 28


def build_network(
    architecture: str, width: int, mask: int = 7, stride: int = 7, activation: str = "erf",
    seed: int = 0,
) -> torch.nn.Sequential:
    """deepbays' own FC (FCNet, one hidden layer) or CNN (ConvNet) as an nn.Sequential, float32.

    FC:  f(x) = Σ_i a_i σ(w_i·x/√N0)/√N;   CNN: f(x) = Σ_{k,i} a_{k,i} σ(w_k·r_i(x)/mask)/√(N·Np).
    Weights start N(0, 1) (deepbays' initialisation, not a prior draw unless λ = 1).
    """
    from deepbays.NN import ConvNet, FCNet

    torch.manual_seed(seed)  # initialisation and ConvNet's dummy forward use the global generator
    n_inputs = INPUT_SIDE * INPUT_SIDE
    with contextlib.redirect_stdout(io.StringIO()):  # the builders print the network
        if architecture == "fc":
            return FCNet(n_inputs, width, 1, act=activation).Sequential()
        if architecture == "cnn":
            return ConvNet(n_inputs, width, mask, stride, act=activation).Sequential()
    raise ValueError(f"architecture must be 'fc' or 'cnn', got {architecture!r}")


def langevin_steps_per_second(
    network: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor, step_size: float,
    temperature: float, lambda0: float = 1.0, lambda1: float = 1.0, n_steps: int = 200,
    n_warmup: int = 10,
) -> dict:
    """Time deepbays' Langevin loop: `n_warmup` untimed steps, then `n_steps` timed ones.

    x: (P, 784) float32 for FC, (P, 1, 28, 28) for CNN; y: (P, 1). Returns steps per second (one
    replica per step: deepbays has no batched replicas), per CPU second of the process (all
    threads; steadier on a shared machine) and the last training loss, which must be
    finite (a diverging step size would make the timing meaningless).
    """
    from deepbays.NN import LangevinOpt, regLoss, train

    optimizer = LangevinOpt(network, step_size, temperature)
    loss = float("nan")
    for _ in range(n_warmup):
        loss = train(network, x, y, regLoss, optimizer, temperature, lambda0, lambda1)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(n_steps):
        loss = train(network, x, y, regLoss, optimizer, temperature, lambda0, lambda1)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    if not torch.isfinite(torch.tensor(loss)):
        raise FloatingPointError(f"deepbays' Langevin loop diverged (loss {loss}); lower step_size")
    return {
        "steps": n_steps, "seconds": seconds, "steps_per_second": n_steps / seconds,
        "cpu_seconds": cpu_seconds, "steps_per_cpu_second": n_steps / cpu_seconds,
        "last_reg_loss": loss, "P": x.shape[0], "torch_threads": torch.get_num_threads(),
    }


def run_task(path: Path) -> dict:
    """`langevin_steps_per_second` on a task saved by another process (see the module doc)."""
    import numpy as np

    with np.load(path) as task:
        fields = {name: task[name] for name in task.files}
    architecture = str(fields["architecture"])
    images = torch.as_tensor(fields["x_train"], dtype=torch.float32)
    x = images.reshape(images.shape[0], -1) if architecture == "fc" else images
    y = torch.as_tensor(fields["y_train"], dtype=torch.float32).reshape(-1, 1)
    network = build_network(architecture, int(fields["width"]), int(fields["mask"]),
                            int(fields["stride"]), str(fields["activation"]))
    return langevin_steps_per_second(
        network, x, y, float(fields["step_size"]), float(fields["temperature"]),
        float(fields["lambda0"]), float(fields["lambda1"]), int(fields["n_steps"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, default=500)
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--step-size", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--root", type=Path, default=Path("data"), help="has MNIST/raw/")
    parser.add_argument("--task", type=Path, help="npz task from another process; prints JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.task:
        print(json.dumps(run_task(args.task)))
        return
    from deepbays_case import deepbays_mnist

    data, labels, *_ = deepbays_mnist(args.root, args.p, 1)
    y = labels.float()
    print(f"{'arch':5} {'P':>5} {'N':>4} {'steps/s':>9} {'steps/CPU s':>11} {'last regLoss':>13}")
    for architecture in ("fc", "cnn"):
        x = data.reshape(args.p, -1) if architecture == "fc" else data
        network = build_network(architecture, args.width)
        stats = langevin_steps_per_second(
            network, x, y, args.step_size, args.temperature, n_steps=args.steps
        )
        print(f"{architecture:5} {args.p:>5} {args.width:>4} {stats['steps_per_second']:>9.1f} "
              f"{stats['steps_per_cpu_second']:>11.1f} {stats['last_reg_loss']:>13.4f}")


if __name__ == "__main__":
    main()
