"""The infinite-width baselines of the P = 2000 slice (CIFAR-10 cat vs dog, T = 0.05): the same
split and code as `lkr_study` (`_infinite_width`), saved on their own so that the finite-width
points can be read from the study's log when the slice is cut short (p2000_from_log.py).

    python examples/lkr_question/p2000_infinite.py OUT.json
"""

import json
import sys
import time
from dataclasses import replace

import torch

from krenorm.architectures import ArchitectureSpec
from krenorm.experiments.lkr_study import StudySettings, _infinite_width, _split

torch.set_num_threads(1)
settings = replace(StudySettings(), n_train=2000, n_validation=400, n_test=400,
                   temperatures=(0.05,), lambda1s=(16.0, 64.0, 256.0))
split = _split(settings.cases[3], settings)
out: dict = {}
for kind, spec in (("fc", ArchitectureSpec("fc", "erf")),
                   ("cnn", ArchitectureSpec("cnn", "erf", 8, 8))):
    started = time.process_time()
    out[kind] = _infinite_width(spec, split, settings)
    out[kind + "_cpu_seconds"] = time.process_time() - started
    best = out[kind]["0.05"]
    print(kind, best["oracle_loss"], best["oracle_lambda1"], best["per_patch_test_loss"],
          flush=True)
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(out, handle, indent=1)
