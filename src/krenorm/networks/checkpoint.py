"""Checkpoint files that cannot run code and cannot change silently (docs/networks.md).

Layout: one ASCII header line, then the payload written by `torch.save`:

    KRENORM-CHECKPOINT <kind> sha256=<64 hex digits>\\n<payload>

On reading, the header must name the expected kind, the SHA-256 of the payload must equal the
recorded one (a flipped bit anywhere is refused, naming the file), and the payload is unpickled by
`torch.load(weights_only=True)`, which builds only tensors and plain containers (dict, list,
tuple, str, numbers, None): a crafted checkpoint is refused before any of its code can run. The
digest guards against corruption, not against a forger, who can recompute it; `weights_only`
is what keeps a forged file from executing anything.

Files without the header (krenorm's earlier plain `torch.save` checkpoints included) are refused:
they cannot be verified.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

#: First bytes of every checkpoint.
MAGIC = b"KRENORM-CHECKPOINT"
#: Longest header line accepted (magic, kind and digest fit well within it).
_MAX_HEADER = 256


def _header(kind: str, digest: str) -> bytes:
    return MAGIC + b" " + kind.encode("ascii") + b" sha256=" + digest.encode("ascii") + b"\n"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any], *, kind: str) -> None:
    """Write `state` (tensors and plain containers only) with its header, atomically: to a
    temporary file that is flushed to disk, then renamed over `path`."""
    if not kind.isascii() or " " in kind or "\n" in kind:
        raise ValueError(f"checkpoint kind must be ASCII without spaces, got {kind!r}.")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(_header(kind, hashlib.sha256(payload).hexdigest()))
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_checkpoint(
    path: str | os.PathLike[str], *, kind: str, map_location: torch.device | str | None = None
) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` with the same `kind`; raise ValueError
    naming the file when the header is missing or of another kind, when the payload's SHA-256
    differs from the recorded one, or when the payload holds anything but tensors and plain
    containers."""
    path = Path(path)
    data = path.read_bytes()
    newline = data.find(b"\n", 0, _MAX_HEADER)
    header = data[:newline].split(b" ") if newline > 0 else []
    if len(header) != 3 or header[0] != MAGIC or not header[2].startswith(b"sha256="):
        raise ValueError(
            f"{path} is not a krenorm checkpoint (no 'KRENORM-CHECKPOINT' header). Files written "
            "by krenorm before checkpoint format 2 (plain torch.save) are refused because their "
            "integrity cannot be checked and loading them could run code; delete the file and "
            "start the run again."
        )
    found_kind = header[1].decode("ascii", errors="replace")
    if found_kind != kind:
        raise ValueError(f"{path} is a {found_kind!r} checkpoint, expected {kind!r}.")
    recorded = header[2][len(b"sha256="):].decode("ascii", errors="replace")
    payload = data[newline + 1:]
    actual = hashlib.sha256(payload).hexdigest()
    if actual != recorded:
        raise ValueError(
            f"checkpoint {path} is corrupted: the SHA-256 of its payload is {actual}, its header "
            f"records {recorded}. The file changed after it was written (disk error, truncation "
            "or an edit); delete it and start the run again."
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, TypeError, EOFError) as error:
        raise ValueError(
            f"checkpoint {path} was refused: its payload holds objects other than tensors and "
            f"plain containers, which krenorm never writes (loaded with weights_only=True, no "
            f"code was run). Detail: {error}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict.")
    return state
