"""Architecture specifications shared by theory and networks (docs/math/theory.md §1).

One frozen spec per experiment, so that the same patch geometry and activation mean the same
thing in the kernels, the effective theory and the sampled torch modules. The dependency runs one
way: this module uses the leaves `kernels.patches` (PatchGeometry) and `kernels.activations` (the
activation names); nothing under `kernels` imports it at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from krenorm.kernels.activations import get_activation
from krenorm.kernels.patches import DEFAULT_PADDING_MODE, IntPair, PaddingMode, PatchGeometry

ArchitectureKind = Literal["fc", "cnn", "lcn", "cnn-gap"]
ARCHITECTURE_KINDS: tuple[str, ...] = get_args(ArchitectureKind)

#: Keys of `ArchitectureSpec.to_dict`, in order; padding_mode only when not Conv2d's default.
_DICT_KEYS = ("kind", "activation", "mask", "stride", "padding", "padding_mode")


@dataclass(frozen=True, init=False)
class ArchitectureSpec:
    """A one-hidden-layer architecture: its kind, activation and patch geometry.

    kind: 'fc' (fully connected), 'cnn' (shared filters, dense readout over channels × positions),
    'lcn' (locally connected: one filter per position), 'cnn-gap' (shared filters, global average
    pooling readout). The patch geometry follows torch.nn.Conv2d and is ignored for 'fc'. Build
    it from mask, stride, padding (and padding_mode) — ``ArchitectureSpec("cnn", "erf", 7, 7)`` —
    or pass ``geometry=PatchGeometry(...)``; ``spec.mask``, ``.stride``, ``.padding`` read it.
    """

    kind: ArchitectureKind
    activation: str
    geometry: PatchGeometry

    def __init__(
        self,
        kind: ArchitectureKind | str = "fc",
        activation: str = "erf",
        mask: IntPair | None = None,
        stride: IntPair | None = None,
        padding: IntPair | None = None,
        *,
        padding_mode: PaddingMode | None = None,
        geometry: PatchGeometry | None = None,
    ) -> None:
        if kind not in ARCHITECTURE_KINDS:
            raise ValueError(f"unknown architecture {kind!r}; choose one of {ARCHITECTURE_KINDS}.")
        get_activation(activation)  # refuses unknown names with the list of known ones
        if geometry is None:
            geometry = PatchGeometry(1 if mask is None else mask,
                                     1 if stride is None else stride,
                                     0 if padding is None else padding,
                                     DEFAULT_PADDING_MODE if padding_mode is None
                                     else padding_mode)
        elif not isinstance(geometry, PatchGeometry):
            raise ValueError(f"geometry must be a PatchGeometry, got {type(geometry).__name__}.")
        elif any(value is not None for value in (mask, stride, padding, padding_mode)):
            raise ValueError("pass either geometry or mask/stride/padding/padding_mode, not both.")
        object.__setattr__(self, "kind", cast(ArchitectureKind, kind))  # checked above
        object.__setattr__(self, "activation", activation)
        object.__setattr__(self, "geometry", geometry)

    @property
    def mask(self) -> tuple[int, int]:
        return self.geometry.mask

    @property
    def stride(self) -> tuple[int, int]:
        return self.geometry.stride

    @property
    def padding(self) -> tuple[int, int]:
        return self.geometry.padding

    @property
    def padding_mode(self) -> PaddingMode:
        return self.geometry.padding_mode

    @property
    def is_convolutional(self) -> bool:
        return self.kind != "fc"

    def output_grid(self, image_shape: tuple[int, ...]) -> tuple[int, int]:
        """Positions (out_h, out_w) of the patch grid for an image (c, H, W); 'fc' has one."""
        if not self.is_convolutional:
            return (1, 1)
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (c, H, W), got {tuple(image_shape)!r}.")
        return self.geometry.grid((image_shape[1], image_shape[2]))

    def n_patches(self, image_shape: tuple[int, ...]) -> int:
        """Np (1 for 'fc')."""
        out_h, out_w = self.output_grid(image_shape)
        return out_h * out_w

    def to_dict(self) -> dict[str, Any]:
        """Flat and JSON-able: kind, activation, mask, stride, padding, and padding_mode only
        when it is not 'zeros' (so that stored hashes of zero-padded specs do not change)."""
        out: dict[str, Any] = {"kind": self.kind, "activation": self.activation,
                               "mask": self.mask, "stride": self.stride,
                               "padding": self.padding}
        if self.padding_mode != DEFAULT_PADDING_MODE:
            out["padding_mode"] = self.padding_mode
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ArchitectureSpec:
        """Inverse of `to_dict` (configs, stores and checkpoints read specs through this)."""
        unknown = set(raw) - set(_DICT_KEYS)
        if unknown:
            raise ValueError(f"unknown architecture keys {sorted(unknown)}; expected a subset of "
                             f"{_DICT_KEYS}.")
        return cls(**raw)
