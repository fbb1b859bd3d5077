"""Architecture specifications shared by theory and networks (THEORY.md §1).

One frozen spec per experiment, so that the same (mask, stride, padding, activation) mean the
same thing in the kernels, the effective theory and the sampled torch modules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from krenorm._validation import as_pair

ArchitectureKind = Literal["fc", "cnn", "lcn", "cnn-gap"]
ARCHITECTURE_KINDS: tuple[str, ...] = ("fc", "cnn", "lcn", "cnn-gap")


@dataclass(frozen=True)
class ArchitectureSpec:
    """A one-hidden-layer architecture.

    kind: 'fc' (fully connected), 'cnn' (shared filters, dense readout over channels × positions),
    'lcn' (locally connected: one filter per position), 'cnn-gap' (shared filters, global average
    pooling readout). mask/stride/padding follow torch.nn.Conv2d and are ignored for 'fc'.
    """

    kind: ArchitectureKind = "fc"
    activation: str = "erf"
    mask: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.kind not in ARCHITECTURE_KINDS:
            raise ValueError(
                f"unknown architecture {self.kind!r}; choose one of {ARCHITECTURE_KINDS}."
            )
        from krenorm.kernels.activations import get_activation  # kernels depend on this module

        get_activation(self.activation)
        object.__setattr__(self, "mask", as_pair("mask", self.mask))
        object.__setattr__(self, "stride", as_pair("stride", self.stride))
        object.__setattr__(self, "padding", as_pair("padding", self.padding, minimum=0))

    @property
    def is_convolutional(self) -> bool:
        return self.kind != "fc"

    def output_grid(self, image_shape: tuple[int, int, int]) -> tuple[int, int]:
        """Positions (out_h, out_w) of the patch grid for an image (c, H, W); 'fc' has one."""
        if not self.is_convolutional:
            return (1, 1)
        from krenorm.kernels.patches import patch_grid

        return patch_grid(image_shape[1:], self.mask, self.stride, self.padding)

    def n_patches(self, image_shape: tuple[int, int, int]) -> int:
        out_h, out_w = self.output_grid(image_shape)
        return out_h * out_w

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> ArchitectureSpec:
        """Inverse of `to_dict` (configs, stores and checkpoints read specs through this)."""
        return cls(**raw)
