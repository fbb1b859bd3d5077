#!/usr/bin/env bash
# Reference environment for the deepbays yardstick (benchmarks/reference/, docs/reference_deepbays.md).
#
# Creates .venv-ref at the repository root (git-ignored), separate from the project's .venv:
#   torch 2.13.0 CPU build (never CUDA), numpy, scipy, deepbays==0.1.11 without its dependencies.
# deepbays imports torchvision and cupy at module level but the code paths we drive (FC_1HL,
# CONV_1HL, LangevinOpt, the network builders) never use them, so they are satisfied by empty
# stand-in modules in .venv-ref/stand-ins, put on the venv's path by a .pth file.
# Idempotent: re-running only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-ref
PY="$VENV/bin/python"

test -x "$PY" || python3 -m venv "$VENV"
"$PY" -m pip install -q numpy scipy

# torch: the local CPU wheel when the machine has one, else the pinned version; checked below.
if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n 1 || true)
    "$PY" -m pip install -q "${wheel:-torch==2.13.0}"
fi
"$PY" -c "import torch, sys; sys.exit('torch in $VENV is a CUDA build' if torch.version.cuda else 0)"

"$PY" -m pip show -q deepbays >/dev/null 2>&1 || "$PY" -m pip install -q --no-deps deepbays==0.1.11

# Empty stand-ins: only the names that `import deepbays` touches.
STAND_INS="$VENV/stand-ins"
mkdir -p "$STAND_INS/torchvision/transforms" "$STAND_INS/cupy/cuda"
cat > "$STAND_INS/torchvision/__init__.py" <<'PY'
"""Empty stand-in: deepbays imports torchvision at module level; the yardstick never uses it."""
PY
cat > "$STAND_INS/torchvision/transforms/__init__.py" <<'PY'
"""Empty stand-in for torchvision.transforms (imported, never used by the yardstick)."""
PY
cat > "$STAND_INS/cupy/__init__.py" <<'PY'
"""Empty stand-in: deepbays imports cupy for its CUDA classes, which the yardstick never uses."""
PY
cat > "$STAND_INS/cupy/cuda/__init__.py" <<'PY'
"""Empty stand-in for cupy.cuda; `Device` exists only because deepbays imports the name."""


class Device:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("cupy is a stand-in in .venv-ref: deepbays' CUDA classes are unavailable")
PY
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
realpath "$STAND_INS" > "$site/deepbays-stand-ins.pth"

"$PY" -c "import deepbays, torch; print('deepbays', deepbays.__file__, '| torch', torch.__version__)"
