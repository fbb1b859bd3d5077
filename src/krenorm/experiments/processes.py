"""Whether a process is alive: used by the results store (are a session's claims abandoned?)
and by pool workers (has the driver died?)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True when a process with this id exists on this host and has not exited (a zombie, dead
    but not yet reaped by its parent, counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        # The state letter follows the parenthesised command name; Z = zombie.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True
