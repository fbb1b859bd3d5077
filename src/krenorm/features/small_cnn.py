"""A small CNN and a brief training loop, the subject of the CNFA report (docs/math/features.md §3).

Standard parameterisation (torch defaults, Adam), since the CNFA is a statement about networks
trained in the usual way; the Bayesian-network parameterisation of docs/math/theory.md lives in
networks/.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from krenorm._validation import check_images


class SmallCNN(nn.Module):
    """conv(q×q, pad q//2) → ReLU → conv(q×q, stride 2, pad q//2) → ReLU → … → flatten → linear.

    `widths` gives the channels of each conv (q = `kernel_size`, odd); every conv after the first
    has stride 2. The
    torch default initialization is drawn from a private generator seeded with `seed` (the
    global torch RNG is left untouched). With `init_scale` = s every weight is drawn i.i.d.
    N(0, s²) instead and every bias is zero (the small-initialization setting of the CNFA
    literature, e.g. s = 0.005; docs/features.md "CNFA" shows how CNFA depends on it).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        image_hw: tuple[int, int],
        widths: tuple[int, ...] = (16, 32),
        kernel_size: int = 3,
        seed: int = 0,
        init_scale: float | None = None,
    ) -> None:
        super().__init__()
        if init_scale is not None and not (init_scale > 0 and init_scale < float("inf")):
            raise ValueError(f"init_scale must be a positive number or None, got {init_scale}.")
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {widths}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._build(in_channels, n_classes, image_hw, widths, kernel_size)
            if init_scale is not None:
                with torch.no_grad():
                    for module in self.modules():
                        if isinstance(module, nn.Conv2d | nn.Linear):
                            module.weight.normal_(0.0, init_scale)
                            if module.bias is not None:
                                module.bias.zero_()

    def _build(
        self,
        in_channels: int,
        n_classes: int,
        image_hw: tuple[int, int],
        widths: tuple[int, ...],
        kernel_size: int,
    ) -> None:
        layers: list[nn.Module] = []
        channels, (height, width) = in_channels, image_hw
        for index, out_channels in enumerate(widths):
            stride = 1 if index == 0 else 2
            conv = nn.Conv2d(
                channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2
            )
            layers += [conv, nn.ReLU()]
            channels = out_channels
            height, width = (height - 1) // stride + 1, (width - 1) // stride + 1
        self.features = nn.Sequential(*layers)
        self.readout = nn.Linear(channels * height * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x).flatten(1))


@dataclass(frozen=True)
class TrainingSummary:
    """Losses per epoch and training accuracy after the last epoch."""

    epoch_losses: tuple[float, ...]
    train_accuracy: float
    n_train: int

    def to_dict(self) -> dict:
        return asdict(self)


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> TrainingSummary:
    """Train `model` in place with Adam on cross-entropy for `epochs` passes (seeded shuffles)."""
    check_images("images", images)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}.")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1.")
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    dtype = next(model.parameters()).dtype
    images = images.to(dtype)
    labels = labels.long()
    model.train()
    losses = []
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        total = 0.0
        for batch in order.split(batch_size):
            optimiser.zero_grad()
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * batch.numel()
        losses.append(total / images.shape[0])
    return TrainingSummary(
        epoch_losses=tuple(losses),
        train_accuracy=classification_accuracy(model, images, labels),
        n_train=images.shape[0],
    )


@torch.no_grad()
def classification_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> float:
    """Fraction of images whose arg-max logit is the label (model in eval mode, then restored)."""
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    correct = sum(
        int((model(x.to(dtype)).argmax(1) == y).sum())
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
    )
    model.train(was_training)
    return correct / images.shape[0]
