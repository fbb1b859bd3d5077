"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions d, then d
big-endian int32 sizes, then the data in C order.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_UNSIGNED_BYTE = 0x08


def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """Decode IDX bytes into a uint8 array; refuses other type codes and inconsistent sizes."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{what} is not an IDX file (bad magic number).")
    if data[2] != _UNSIGNED_BYTE:
        raise ValueError(f"{what} has IDX type code {data[2]:#04x}; only unsigned bytes are read.")
    n_dims = data[3]
    header = 4 + 4 * n_dims
    shape = struct.unpack(f">{n_dims}i", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise ValueError(
            f"{what} declares shape {shape} ({expected} bytes) but holds "
            f"{len(data) - header} bytes; the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX or IDX.gz file (chosen by the .gz suffix)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return parse_idx(handle.read(), what=str(path))


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz` in folder, also in the dotted spelling (t10k-images.idx3-ubyte)."""
    spellings = [stem, stem.replace("-idx", ".idx")]
    for spelling in spellings:
        for name in (spelling, spelling + ".gz"):
            path = folder / name
            if path.is_file():
                return path
    return None
