"""Deep architectures: L ≥ 1 hidden layers of FC, CNN, LCN or CNN-GAP networks
(docs/math/deep.md §1).

A `DeepArchitectureSpec` is the depth-L counterpart of `ArchitectureSpec`: the kind, the
activation and, for the convolutional kinds, one Conv2d patch geometry (mask, stride, zero
padding) per hidden layer. Like `ArchitectureSpec` it holds structure only; widths N_1..N_L and
priors λ_0..λ_L are hyper-parameters passed next to it (theory and networks read them the same
way). Depth 1 is the one-hidden-layer architecture: `DeepArchitectureSpec.from_shallow(spec)` and
`.shallow()` convert, and every one-layer result is reproduced exactly (tests/test_deep_theory.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from krenorm.architectures import ARCHITECTURE_KINDS, ArchitectureSpec
from krenorm.kernels.activations import get_activation
from krenorm.kernels.patches import PatchGeometry


def _as_geometry(value: PatchGeometry | dict[str, Any] | int | tuple[int, int]
                 ) -> PatchGeometry:
    if isinstance(value, PatchGeometry):
        return value
    if isinstance(value, dict):
        return PatchGeometry.from_dict(value)
    return PatchGeometry(value)


@dataclass(frozen=True, init=False)
class DeepArchitectureSpec:
    """kind ('fc', 'cnn', 'lcn', 'cnn-gap'), activation, depth L and per-layer geometries.

    For 'fc' the geometries are ignored (pass none). For the convolutional kinds pass one
    geometry per hidden layer (a `PatchGeometry`, a mask int/pair, or its dict); layer 1 cuts
    patches of the image, layer ℓ + 1 of the N_ℓ-channel map of layer ℓ. Deeper layers pad
    with zeros only (the padded post-activation is 0, docs/math/deep.md §2).
    """

    kind: str
    activation: str
    depth: int
    geometries: tuple[PatchGeometry, ...]

    def __init__(self, kind: str = "fc", activation: str = "erf", depth: int = 1,
                 geometries: Sequence[PatchGeometry | dict[str, Any] | int | tuple[int, int]]
                 | None = None) -> None:
        if kind not in ARCHITECTURE_KINDS:
            raise ValueError(f"unknown architecture {kind!r}; choose one of {ARCHITECTURE_KINDS}.")
        get_activation(activation)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int (hidden layers), got {depth!r}.")
        if kind == "fc":
            if geometries:
                raise ValueError("an 'fc' architecture takes no geometries; leave them out.")
            layers: tuple[PatchGeometry, ...] = ()
        else:
            if geometries is None or len(geometries) != depth:
                raise ValueError(f"a deep {kind} of depth {depth} needs one geometry per hidden "
                                 f"layer (mask, stride, padding), got "
                                 f"{0 if geometries is None else len(geometries)}.")
            layers = tuple(_as_geometry(g) for g in geometries)
            for index, geometry in enumerate(layers[1:], start=2):
                if geometry.padding_mode != "zeros":
                    raise ValueError(f"layer {index} uses padding_mode "
                                     f"{geometry.padding_mode!r}; layers after the first pad "
                                     "with zeros only.")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "activation", activation)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "geometries", layers)

    @property
    def is_convolutional(self) -> bool:
        return self.kind != "fc"

    @classmethod
    def from_shallow(cls, spec: ArchitectureSpec) -> DeepArchitectureSpec:
        """The depth-1 deep spec of a one-hidden-layer spec."""
        geometries = [spec.geometry] if spec.is_convolutional else None
        return cls(spec.kind, spec.activation, 1, geometries)

    def shallow(self) -> ArchitectureSpec:
        """The one-hidden-layer `ArchitectureSpec` (depth 1 only)."""
        if self.depth != 1:
            raise ValueError(f"shallow() needs depth 1, this spec has depth {self.depth}.")
        if self.is_convolutional:
            return ArchitectureSpec(self.kind, self.activation, geometry=self.geometries[0])
        return ArchitectureSpec(self.kind, self.activation)

    def grids(self, image_shape: Sequence[int]) -> list[tuple[int, int]]:
        """Output grid (h_ℓ, w_ℓ) of every hidden layer for images (c, H, W)."""
        if not self.is_convolutional:
            return [(1, 1)] * self.depth
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (c, H, W), got {tuple(image_shape)!r}.")
        grid = (int(image_shape[1]), int(image_shape[2]))
        out = []
        for geometry in self.geometries:
            grid = geometry.grid(grid)
            out.append(grid)
        return out

    def n_positions(self, image_shape: Sequence[int]) -> int:
        """d = positions of the last hidden layer (1 for 'fc')."""
        h, w = self.grids(image_shape)[-1]
        return h * w

    # The one-layer spec's views, so tables and reports read either spec: layer 1's geometry
    # (the kernel's defaults for 'fc') and the last layer's grid.

    @property
    def mask(self) -> tuple[int, int]:
        """Layer 1's mask ((1, 1) for 'fc'); `geometries` holds every layer's."""
        return self.geometries[0].mask if self.geometries else (1, 1)

    @property
    def stride(self) -> tuple[int, int]:
        """Layer 1's stride ((1, 1) for 'fc')."""
        return self.geometries[0].stride if self.geometries else (1, 1)

    @property
    def padding(self) -> tuple[int, int]:
        """Layer 1's padding ((0, 0) for 'fc')."""
        return self.geometries[0].padding if self.geometries else (0, 0)

    def output_grid(self, image_shape: Sequence[int]) -> tuple[int, int]:
        """The last hidden layer's grid (h_L, w_L) for images (c, H, W); (1, 1) for 'fc'."""
        return self.grids(image_shape)[-1]

    def describe(self) -> str:
        """'L=2' and, for the convolutional kinds, every layer's mask/stride/padding."""
        layers = "; ".join(f"{g.mask[0]}×{g.mask[1]}/s{g.stride[0]}"
                           + (f"/p{g.padding[0]}" if any(g.padding) else "")
                           for g in self.geometries)
        return f"L={self.depth}" + (f" ({layers})" if layers else "")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "activation": self.activation, "depth": self.depth,
                "geometries": [g.to_dict() for g in self.geometries]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeepArchitectureSpec:
        unknown = set(raw) - {"kind", "activation", "depth", "geometries"}
        if unknown:
            raise ValueError(f"unknown deep-architecture keys {sorted(unknown)}.")
        geometries = raw.get("geometries") or None
        return cls(raw.get("kind", "fc"), raw.get("activation", "erf"), raw.get("depth", 1),
                   geometries)


def check_layer_values(name: str, values: Sequence[float] | float, count: int) -> tuple[float, ...]:
    """A positive value per layer (a scalar is repeated): widths N_1..N_L or priors λ_0..λ_L."""
    if isinstance(values, int | float):
        values = [float(values)] * count
    out = tuple(float(v) for v in values)
    if len(out) != count:
        raise ValueError(f"{name} needs {count} values (one per layer), got {len(out)}.")
    if not all(v > 0 for v in out):
        raise ValueError(f"{name} must be positive, got {out}.")
    return out
