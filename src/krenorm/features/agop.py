"""Patch-AGOP of the Conv2d layers of a torch model (docs/math/features.md §2).

For a layer with filters W ∈ R^{k×d} (per group when groups > 1), replace the conv output at
position r by W u_r with the patch u_r as an independent argument. Then

    G = (1/|S|) Σ_x Σ_r Σ_o ∇_{u_r} f_o ∇_{u_r} f_oᵀ = Wᵀ Δ W,
    Δ = (1/|S|) Σ_{x,r,o} δ_{o,r} δ_{o,r}ᵀ,   δ_{o,r} = ∂f_o / ∂(conv output at r),

so only gradients with respect to the conv output are needed. They are captured with forward
hooks and `torch.autograd.grad`; no patch Jacobian is formed. A residual skip path that bypasses
the conv never sees u_r, hence is excluded automatically. `brute_force_patch_agop` forms the
patch Jacobians explicitly and is the reference the identity is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from krenorm._validation import check_finite
from krenorm.kernels.patches import extract_patches

OutputFunction = Callable[[torch.Tensor], torch.Tensor]
Estimator = Literal["exact", "probes"]
#: Conv2d padding modes and the torch.nn.functional.pad mode that reproduces each.
_PAD_MODES = {
    "zeros": "constant",
    "circular": "circular",
    "reflect": "reflect",
    "replicate": "replicate",
}


@dataclass(frozen=True)
class PatchAGOP:
    """Patch-AGOP of one Conv2d layer.

    agop: (groups, d, d) stack of G_g = W_gᵀ Δ_g W_g, d = (c/groups)·q_h·q_w.
    output_covariance: (groups, k/groups, k/groups) stack of Δ_g.
    filters: (groups, k/groups, d) the filters W_g the AGOP was computed with.
    per_image_output_covariance: (n_images, groups, k/g, k/g) per-image Δ_x (sum over r and o,
    not divided by |S|) when requested; Δ is their mean. Used for bootstraps and convergence.
    """

    layer: str
    agop: torch.Tensor
    output_covariance: torch.Tensor
    filters: torch.Tensor
    n_images: int
    estimator: str
    n_probes: int | None
    per_image_output_covariance: torch.Tensor | None = None

    @property
    def groups(self) -> int:
        return self.agop.shape[0]

    @property
    def matrix(self) -> torch.Tensor:
        """G as a (d, d) matrix; only defined for an ungrouped conv (use `agop` otherwise)."""
        if self.groups != 1:
            raise ValueError(
                f"layer {self.layer!r} has {self.groups} groups: use `.agop[g]` for group g."
            )
        return self.agop[0]

    def filter_second_moment(self) -> torch.Tensor:
        """(groups, d, d) stack of W_gᵀ W_g (uncentred filter covariance)."""
        return self.filters.transpose(1, 2) @ self.filters

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "agop": self.agop.tolist(),
            "output_covariance": self.output_covariance.tolist(),
            "n_images": self.n_images,
            "estimator": self.estimator,
            "n_probes": self.n_probes,
        }


def conv_layers(
    model: nn.Module, layers: str | nn.Conv2d | Sequence[str | nn.Conv2d] | None = None
) -> dict[str, nn.Conv2d]:
    """Resolve layer names or modules to {name: Conv2d}; None selects every Conv2d of model."""
    named = {
        name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d)
    }
    if not named:
        raise ValueError("the model has no torch.nn.Conv2d layer; patch-AGOP needs one.")
    if layers is None:
        return named
    requested = [layers] if isinstance(layers, str | nn.Module) else list(layers)
    by_module = {id(module): name for name, module in named.items()}
    out: dict[str, nn.Conv2d] = {}
    for item in requested:
        if isinstance(item, str):
            if item not in named:
                raise ValueError(
                    f"no Conv2d named {item!r}; the model's Conv2d layers: {list(named)}."
                )
            out[item] = named[item]
        elif id(item) in by_module:
            out[by_module[id(item)]] = item
        else:
            raise ValueError(f"{item!r} is not a Conv2d of this model.")
    return out


def iterate_image_batches(
    data: torch.Tensor | Iterable, batch_size: int = 64
) -> Iterator[torch.Tensor]:
    """Yield image batches from a (P, c, H, W) tensor or an iterable of tensors / (x, y, ...)
    tuples such as a torch DataLoader (streaming: nothing beyond one batch is held)."""
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"images must have shape (P, c, H, W), got {tuple(data.shape)}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        yield from data.split(batch_size)
        return
    for batch in data:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(
                "each batch must be an image tensor (B, c, H, W) or a tuple whose first entry is "
                "one."
            )
        yield x


def _model_outputs(
    model: nn.Module, x: torch.Tensor, output_fn: OutputFunction | None
) -> torch.Tensor:
    out = model(x)
    if output_fn is not None:
        out = output_fn(out)
    if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or out.shape[0] != x.shape[0]:
        raise ValueError(
            "the model (after output_fn) must return outputs of shape (B,) or (B, O); pass an "
            "output_fn that selects the logits."
        )
    return out.reshape(x.shape[0], -1)


def _reference_parameters(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    parameter = next(model.parameters(), None)
    if parameter is None:
        return torch.get_default_dtype(), torch.device("cpu")
    return parameter.dtype, parameter.device


class _OutputCapture:
    """Forward hooks that record every output of the chosen convs (a conv called twice in one
    forward contributes both calls). The recorded tensor is handed on as a clone so that an
    in-place op downstream (ReLU(inplace=True)) cannot overwrite what we differentiate against."""

    def __init__(self, layers: dict[str, nn.Conv2d]) -> None:
        self.outputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
        self.handles = [
            module.register_forward_hook(self._hook(name)) for name, module in layers.items()
        ]

    def _hook(self, name: str) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor]:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            self.outputs[name].append(output)
            return output.clone()

        return hook

    def clear(self) -> None:
        for recorded in self.outputs.values():
            recorded.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _output_gradients(
    outputs: torch.Tensor,
    captured: list[torch.Tensor],
    cotangents: torch.Tensor,
    vectorize: bool,
) -> list[torch.Tensor]:
    """(S, B, k, H', W') gradients of ⟨cotangent_s, f⟩ with respect to each captured conv output:
    one backward per row of `cotangents` (S, B, O), vmapped when `vectorize`."""
    if vectorize:
        grads = torch.autograd.grad(
            outputs, captured, grad_outputs=cotangents, is_grads_batched=True, allow_unused=True
        )
        return [
            torch.zeros_like(c).expand(cotangents.shape[0], *c.shape) if g is None else g
            for g, c in zip(grads, captured, strict=True)
        ]
    rows = []
    for s in range(cotangents.shape[0]):
        grads = torch.autograd.grad(
            outputs, captured, grad_outputs=cotangents[s], retain_graph=True, allow_unused=True
        )
        rows.append(
            [torch.zeros_like(c) if g is None else g for g, c in zip(grads, captured, strict=True)]
        )
    return [torch.stack(column) for column in zip(*rows, strict=True)]


def patch_agop(
    model: nn.Module,
    data: torch.Tensor | Iterable,
    layers: str | nn.Conv2d | Sequence[str | nn.Conv2d] | None = None,
    estimator: Estimator = "exact",
    n_probes: int = 16,
    seed: int = 0,
    output_fn: OutputFunction | None = None,
    batch_size: int = 64,
    keep_per_image: bool = False,
    vectorize: bool = True,
) -> dict[str, PatchAGOP]:
    """Patch-AGOP G = Wᵀ Δ W of Conv2d layers of `model` over the images in `data`.

    docs/math/features.md §2. `estimator="exact"` takes one backward per output o
    (vmapped over outputs when `vectorize`); `"probes"` uses `n_probes` Gaussian probes g per
    image, E[(Jᵀg)(Jᵀg)ᵀ] = JᵀJ, unbiased for Δ and G. `data` is a (P, c, H, W) tensor (split
    into `batch_size` chunks) or any iterable of batches (a DataLoader streams). The model is
    put in eval mode for the computation (batch-norm statistics and dropout would otherwise couple
    or randomise images) and restored afterwards. Returns {layer name: PatchAGOP}.
    """
    if estimator not in ("exact", "probes"):
        raise ValueError(f"estimator must be 'exact' or 'probes', got {estimator!r}.")
    if estimator == "probes" and n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}.")
    selected = conv_layers(model, layers)
    dtype, device = _reference_parameters(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    capture = _OutputCapture(selected)
    sums: dict[str, torch.Tensor] = {}
    per_image: dict[str, list[torch.Tensor]] = {name: [] for name in selected}
    n_images = 0
    was_training = model.training
    model.eval()
    try:
        for batch in iterate_image_batches(data, batch_size):
            x = batch.to(device=device, dtype=dtype)
            check_finite("images", x)
            # Inputs that require grad keep every conv output in the graph even when the
            # model's parameters are frozen.
            x = x.detach().requires_grad_(True)
            capture.clear()
            outputs = _model_outputs(model, x, output_fn)
            n_batch, n_outputs = outputs.shape
            if estimator == "exact":
                eye = torch.eye(n_outputs, dtype=outputs.dtype, device=device)
                cotangents = eye[:, None, :].expand(n_outputs, n_batch, n_outputs)
                scale = 1.0
            else:
                cotangents = torch.randn(
                    n_probes,
                    n_batch,
                    n_outputs,
                    generator=generator,
                    dtype=outputs.dtype,
                    device=device,
                )
                scale = 1.0 / n_probes
            names = [name for name in selected for _ in capture.outputs[name]]
            captured = [t for name in selected for t in capture.outputs[name]]
            if not captured:
                raise ValueError("none of the selected Conv2d layers was called by the model.")
            grads = _output_gradients(outputs, captured, cotangents, vectorize)
            batch_terms: dict[str, torch.Tensor] = {}
            for name, grad in zip(names, grads, strict=True):
                groups = selected[name].groups
                s, b, k = grad.shape[:3]
                blocks = grad.reshape(s, b, groups, k // groups, -1).to(torch.float64)
                term = torch.einsum("sbgkr,sbgjr->bgkj", blocks, blocks) * scale
                batch_terms[name] = batch_terms.get(name, 0) + term
            for name, term in batch_terms.items():
                sums[name] = sums.get(name, 0) + term.sum(0)
                if keep_per_image:
                    per_image[name].append(term.cpu())
            n_images += n_batch
    finally:
        capture.remove()
        model.train(was_training)
    if n_images == 0:
        raise ValueError("data yielded no images.")
    unused = [name for name in selected if name not in sums]
    if unused:
        raise ValueError(f"the model never called the selected Conv2d layer(s) {unused}.")
    results = {}
    for name, conv in selected.items():
        groups = conv.groups
        filters = (
            conv.weight.detach().to(torch.float64).reshape(groups, conv.out_channels // groups, -1)
        )
        delta = sums[name] / n_images
        agop = filters.transpose(1, 2) @ delta @ filters
        results[name] = PatchAGOP(
            layer=name,
            agop=0.5 * (agop + agop.transpose(1, 2)),
            output_covariance=delta,
            filters=filters,
            n_images=n_images,
            estimator=estimator,
            n_probes=n_probes if estimator == "probes" else None,
            per_image_output_covariance=torch.cat(per_image[name]) if keep_per_image else None,
        )
    return results


def conv_explicit_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding that Conv2d applies, resolving 'valid' and 'same'."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0, 0, 0)
        pads = []
        for size, dilation in zip(reversed(conv.kernel_size), reversed(conv.dilation), strict=True):
            total = dilation * (size - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)  # type: ignore[return-value]
    pad_h, pad_w = conv.padding
    return (pad_w, pad_w, pad_h, pad_h)


def conv_patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Patches (B, Np, c·q_h·q_w) of a conv's input x, padded as the conv pads it (zeros,
    circular, reflect, replicate), so that conv(x) at r equals weight.reshape(k, −1) @ p_r."""
    if conv.dilation != (1, 1):
        raise ValueError("explicit patches need dilation 1; the hook estimator handles dilation.")
    left, right, top, bottom = conv_explicit_padding(conv)
    if any((left, right, top, bottom)):
        mode = _PAD_MODES[conv.padding_mode]
        x = F.pad(x, (left, right, top, bottom), mode=mode)
    mask = (conv.kernel_size[0], conv.kernel_size[1])
    return extract_patches(x, mask, (conv.stride[0], conv.stride[1]), 0)


def conv_from_patches(
    conv: nn.Conv2d, patches: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Conv output (B, k, H', W') computed as W_g u_{r,g} (+ bias) from patches (B, Np, c·q²)."""
    groups, k = conv.groups, conv.out_channels
    n_batch, n_positions, _ = patches.shape
    weight = conv.weight.reshape(groups, k // groups, -1)
    grouped = patches.reshape(n_batch, n_positions, groups, -1)
    out = torch.einsum("gkd,brgd->brgk", weight, grouped).reshape(n_batch, n_positions, k)
    if conv.bias is not None:
        out = out + conv.bias
    return out.transpose(1, 2).reshape(n_batch, k, *grid)


def brute_force_patch_agop(
    model: nn.Module,
    layer: str | nn.Conv2d,
    images: torch.Tensor,
    output_fn: OutputFunction | None = None,
) -> torch.Tensor:
    """Reference patch-AGOP (groups, d, d) from explicit patch Jacobians ∂f_o/∂u_r, image by image.

    The conv's output is recomputed from its patches u (an independent leaf) through
    `conv_from_patches`, the full Jacobian of f with respect to u is formed with
    torch.autograd.functional.jacobian, and G_g = (1/|S|) Σ_{x,r,o} J_{o,r,g} J_{o,r,g}ᵀ.
    Cost: O backward passes per image; for tests and benchmarks only.
    """
    name, conv = next(iter(conv_layers(model, layer).items()))
    dtype, device = _reference_parameters(model)
    images = images.to(device=device, dtype=dtype)
    groups = conv.groups
    state: dict[str, Any] = {}  # the conv's input, its output grid and the patches

    def record_input(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if "input" in state:
            raise ValueError(f"layer {name!r} is called more than once per forward.")
        state["input"] = inputs[0].detach()
        state["grid"] = output.shape[2:]

    def replace_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return conv_from_patches(conv, state["patches"], tuple(state["grid"]))

    was_training = model.training
    model.eval()
    total = None
    try:
        for image in images.split(1):
            state.clear()
            handle = conv.register_forward_hook(record_input)
            with torch.no_grad():
                model(image)
            handle.remove()
            patches0 = conv_patches(conv, state["input"])

            def function(patches: torch.Tensor, image: torch.Tensor = image) -> torch.Tensor:
                state["patches"] = patches
                return _model_outputs(model, image, output_fn)[0]

            handle = conv.register_forward_hook(replace_output)
            try:
                jacobian = torch.autograd.functional.jacobian(
                    function, patches0
                )  # (O, 1, Np, c q²)
            finally:
                handle.remove()
            n_outputs = jacobian.shape[0]
            blocks = jacobian.reshape(n_outputs, -1, groups, jacobian.shape[-1] // groups)
            term = torch.einsum("orgd,orge->gde", blocks, blocks).to(torch.float64)
            total = term if total is None else total + term
    finally:
        model.train(was_training)
    if total is None:
        raise ValueError("images is empty; pass at least one image.")
    return total / images.shape[0]
