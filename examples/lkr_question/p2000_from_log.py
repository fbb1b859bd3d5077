"""Assemble the P = 2000 finite-width slice (CIFAR-10 cat vs dog, T = 0.05) in the lkr_study JSON
format from the study's progress log and its separately computed infinite-width baselines, for
a slice cut short before the study wrote its JSON (the report says which points are missing).

    python examples/lkr_question/p2000_from_log.py runs/p2000.log runs/p2000_infinite.json OUT.json
"""

import json
import re
import sys

log_path, infinite_path, out_path = sys.argv[1:4]
with open(infinite_path, encoding="utf-8") as handle:
    infinite = json.load(handle)
with open(log_path, encoding="utf-8") as handle:
    lines = handle.readlines()
pattern = re.compile(r"^\s+(\w+) T=([\d.]+) λ1=([\d.]+) N=([\d.]+): ε_g = ([\d.]+) "
                     r"\((converged|NOT converged), (\d+) s CPU\)")
finite: dict[str, dict] = {"fc": {}, "cnn": {}}
for line in lines:
    match = pattern.match(line)
    if match:
        kind, temperature, lambda1, width, loss, converged, seconds = match.groups()
        alpha = 2000 / float(width)
        finite[kind][f"{float(temperature)}|{float(lambda1)}|{alpha}"] = {
            "temperature": float(temperature), "lambda1": float(lambda1), "alpha": alpha,
            "width": float(width), "test_loss": float(loss),
            "converged": converged == "converged", "cpu_seconds": float(seconds)}
lambda1s = sorted({p["lambda1"] for entries in finite.values() for p in entries.values()})
study = {"settings": {"n_train": 2000, "n_validation": 400, "n_test": 400,
                      "temperatures": [0.05], "lambda1s": lambda1s,
                      "architectures": ["cnn", "fc"]},
         "cases": [{"case": {"name": "CIFAR-10 cat vs dog, RGB 32×32, P = 2000"},
                    "shape": [2000, 3, 32, 32],
                    **{kind: {"infinite": infinite[kind], "finite": finite[kind]}
                       for kind in ("cnn", "fc")}}]}
with open(out_path, "w", encoding="utf-8") as handle:
    json.dump(study, handle, indent=1)
print({kind: len(entries) for kind, entries in finite.items()})
