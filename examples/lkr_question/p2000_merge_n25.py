"""Add the N = 25 (and, from the same continuation path, N = 50) CNN points of p2000_n25.py
(converged ones only) to p2000_slice.json, in the
lkr_study format, with the solve's ‖∇S‖, smallest Hessian eigenvalue and CPU seconds; then
`python -m krenorm.experiments.lkr_report --slice examples/lkr_question/p2000_slice.json --out
examples/lkr_question` redraws p2000_slice.png and rewrites p2000_slice_rows.json.

    python examples/lkr_question/p2000_merge_n25.py N25.json
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
with open(sys.argv[1], encoding="utf-8") as handle:
    records = json.load(handle)
path = HERE / "p2000_slice.json"
with open(path, encoding="utf-8") as handle:
    study = json.load(handle)
finite = study["cases"][0]["cnn"]["finite"]
for index, record in enumerate(records):
    if record["width"] not in (25.0, 50.0) or not record["converged"]:
        continue
    # CPU seconds of the continuation path up to this point (from the N = 100 solve on)
    path_seconds = sum(r["cpu_seconds"] for r in records[:index + 1]
                       if r["lambda1"] == record["lambda1"])
    finite[f"{record['temperature']}|{record['lambda1']}|{record['alpha']}"] = {
        "temperature": record["temperature"], "lambda1": record["lambda1"],
        "alpha": record["alpha"], "width": record["width"], "test_loss": record["test_loss"],
        "converged": True, "cpu_seconds": record["cpu_seconds"],
        "path_cpu_seconds": path_seconds, "gradient_norm": record["gradient_norm"],
        "min_hessian_eigenvalue": record.get("min_hessian_eigenvalue"),
        "solver": f"newton-krylov from {record['start']} (p2000_n25.py)",
        "q_bar": record["q_bar"]}
with open(path, "w", encoding="utf-8") as handle:
    json.dump(study, handle, indent=1)
print(sorted(finite))
