"""One PatchGeometry for architectures, kernels, theory, networks and features
(docs/math/theory.md §1)."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from krenorm.architectures import ArchitectureSpec
from krenorm.features.conv_kernels import PatchGeometry as FeaturesPatchGeometry
from krenorm.kernels import PatchGeometry, compute_local_blocks, extract_patches, nngp_kernel
from krenorm.networks import build_network


def _images(n=5, channels=2, side=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, side, side, generator=generator, dtype=torch.float64)


def test_one_class_everywhere():
    assert FeaturesPatchGeometry is PatchGeometry
    spec = ArchitectureSpec("cnn", "erf", mask=3, stride=2, padding=1)
    assert isinstance(spec.geometry, PatchGeometry)
    assert spec.geometry == PatchGeometry((3, 3), (2, 2), (1, 1))


def test_geometry_round_trip_and_pairs():
    geometry = PatchGeometry(mask=(3, 2), stride=2, padding=[1, 0], padding_mode="circular")
    assert (geometry.mask, geometry.stride, geometry.padding) == ((3, 2), (2, 2), (1, 0))
    raw = json.loads(json.dumps(geometry.to_dict()))
    assert PatchGeometry.from_dict(raw) == geometry
    assert geometry.grid((6, 5)) == (3, 2)  # ⌊(6 + 2 − 3)/2⌋ + 1, ⌊(5 − 2)/2⌋ + 1
    assert geometry.n_patches((6, 5)) == 6
    assert geometry.patch_dimension(2) == 12
    assert geometry.patch_shape(2) == (2, 3, 2)


def test_geometry_errors_name_the_argument():
    with pytest.raises(ValueError, match="padding_mode"):
        PatchGeometry(3, padding_mode="reflect")
    with pytest.raises(ValueError, match="mask"):
        PatchGeometry(0)
    with pytest.raises(ValueError, match="padding"):
        PatchGeometry(3, padding=-1)
    with pytest.raises(ValueError, match="unknown patch-geometry keys"):
        PatchGeometry.from_dict({"mask": 3, "dilation": 2})
    with pytest.raises(ValueError, match="larger than the"):
        PatchGeometry(7).grid((5, 5))
    with pytest.raises(ValueError, match="inside the PatchGeometry"):
        PatchGeometry.of(PatchGeometry(3), stride=2)
    with pytest.raises(ValueError, match="not both"):
        ArchitectureSpec("cnn", "erf", mask=3, geometry=PatchGeometry(3))
    with pytest.raises(ValueError, match="unknown architecture keys"):
        ArchitectureSpec.from_dict({"kind": "cnn", "activation": "erf", "dilation": 1})


def test_spec_constructors_and_flat_stable_dict():
    by_keyword = ArchitectureSpec("cnn", "erf", mask=7, stride=7)
    by_position = ArchitectureSpec("cnn", "erf", 7, 7, 0)
    assert by_keyword == by_position
    assert (by_keyword.mask, by_keyword.stride, by_keyword.padding) == ((7, 7), (7, 7), (0, 0))
    # The flat form stored specs are hashed by: unchanged for zero padding.
    assert by_keyword.to_dict() == {"kind": "cnn", "activation": "erf", "mask": (7, 7),
                                    "stride": (7, 7), "padding": (0, 0)}
    assert ArchitectureSpec.from_dict(json.loads(json.dumps(by_keyword.to_dict()))) == by_keyword
    circular = ArchitectureSpec("lcn", "tanh", 3, 1, 1, padding_mode="circular")
    assert circular.to_dict()["padding_mode"] == "circular"
    assert ArchitectureSpec.from_dict(json.loads(json.dumps(circular.to_dict()))) == circular
    assert ArchitectureSpec("fc").to_dict() == {"kind": "fc", "activation": "erf", "mask": (1, 1),
                                                "stride": (1, 1), "padding": (0, 0)}
    assert hash(by_keyword) == hash(by_position)


@pytest.mark.slow
def test_architectures_imports_without_a_cycle():
    # Each module imported first in a fresh interpreter: the dependency runs one way.
    for module in ("krenorm.architectures", "krenorm.kernels", "krenorm.kernels.nngp",
                   "krenorm.theory", "krenorm.features"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def test_circular_padding_is_the_same_in_kernels_and_networks():
    x = _images()
    circular = PatchGeometry(3, 1, 1, "circular")
    wrapped = F.pad(x, (1, 1, 1, 1), mode="circular")
    assert torch.equal(circular.patches(x), extract_patches(wrapped, 3, 1, 0))
    # Kernels: circular padding = zero-free patches of the wrapped image.
    blocks = compute_local_blocks(x, circular)
    reference = compute_local_blocks(wrapped, 3, 1, 0)
    assert torch.allclose(blocks.pairs, reference.pairs, atol=1e-14)
    spec = ArchitectureSpec("cnn", "erf", geometry=circular)
    plain = ArchitectureSpec("cnn", "erf", 3, 1, 0)
    assert torch.allclose(nngp_kernel(spec, x), nngp_kernel(plain, wrapped), atol=1e-14)
    # Sampled networks cut the same patches.
    net = build_network(spec, 2, tuple(x.shape[1:]), seed=0)
    prepared = net.prepare(x)
    assert torch.allclose(prepared.values * 18**0.5, circular.patches(x), atol=1e-14)
