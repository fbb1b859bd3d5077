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


def process_started_at(pid: int) -> float | None:
    """When the process with this id started (Unix time, to the clock tick), from Linux's
    /proc/PID/stat (field 22: start time in ticks after boot) and /proc/stat (btime: boot time);
    None where /proc does not say (another OS, no such process).

    Used to tell a live driver from a new process that reuses a dead driver's id: a process
    that started after the session it is supposed to own cannot be that session's driver."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
        ticks = int(fields[19])
        boot = next(int(line.split()[1]) for line in
                    Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None
