"""Markdown report of a compare run: set-up, the agreement of every network point with the
finite-width theory, theory tables per architecture and the figures."""

from __future__ import annotations

import math
from pathlib import Path

from krenorm.experiments.compare import AGREEMENT_RELATIVE, AGREEMENT_STANDARD_ERRORS


def _format(value, digits: int = 5) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "∞"
    return f"{value:.{digits}g}"


def render_report(result) -> str:
    config = result.config
    data = result.provenance.get("data", {})
    hyper = config.hyper
    lines = [
        f"# {config.name}: kernel renormalization theory vs sampled networks",
        "",
        f"Data: {data.get('description', config.data.dataset)}; classes "
        f"{list(config.data.classes)}, P = {config.data.n_train} training and "
        f"{config.data.n_test} test points "
        f"(labels {config.data.labels}, standardization {config.data.standardize}).",
        f"Hyper-parameters: T = {hyper.temperature}, λ0 = {hyper.lambda0}, λ1 = {hyper.lambda1}, "
        f"activation {hyper.activation}. Networks: {config.networks.sampler} sampler, "
        f"{config.networks.n_replicas} replicas × {config.networks.n_steps} steps.",
        "",
    ]
    lines += [f"> {note}" for note in config.notes]
    agreements = result.agreements()
    if agreements:
        lines += [
            "## Networks vs finite-width theory",
            "",
            f"A point agrees when |network − theory| ≤ {AGREEMENT_STANDARD_ERRORS:g} standard "
            f"errors or ≤ {100 * AGREEMENT_RELATIVE:g} % of the theory.",
            "",
            "| architecture | N | network ε_g ± SE | theory (finite N) | theory (N = ∞) | "
            "|Δ|/SE | |Δ|/theory | agrees |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for a in agreements:
            lines.append(
                f"| {a.architecture} | {a.width:g} | {_format(a.network)} ± {_format(a.stderr, 2)} "
                f"| {_format(a.theory)} | {_format(a.infinite)} | {a.standard_errors:.2f} | "
                f"{100 * a.relative:.2f} % | {'yes' if a.within else '**no**'} |"
            )
        largest = {}
        for a in agreements:
            if a.width >= largest.get(a.architecture, a).width:
                largest[a.architecture] = a
        summary = ", ".join(f"{kind} at N = {a.width:g}: {'agrees' if a.within else 'DISAGREES'}"
                            for kind, a in largest.items())
        lines += ["", f"At the largest sampled width: {summary}.", ""]
    lines += _sampler_diagnostics(result.rows)
    lines += ["## Theory", ""]
    for spec in config.architectures:
        kind = spec.kind
        rows = sorted((r for r in result.rows if r.architecture == kind
                       and r.source in ("theory", "theory-infinite", "retuned-infinite")),
                      key=lambda r: (r.source, r.width))
        lines += [f"### {kind.upper()} (mask {spec.mask}, stride {spec.stride})", "",
                  "| source | N | α | ε_g | bias² | variance | train error | off-diagonal share |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            share = r.details.get("off_diagonal_share")
            lines.append(f"| {r.source} | {_format(r.width)} | {_format(r.alpha, 3)} | "
                         f"{_format(r.test_loss)} | {_format(r.bias2)} | {_format(r.variance)} | "
                         f"{_format(r.train_error)} | {_format(share, 3)} |")
        lines.append("")
    lines += ["## Figures", ""]
    for name in sorted(path.name for path in result.output_dir.glob("*.png")):
        lines.append(f"![{name}]({name})")
    lines.append("")
    lines.append(f"Tables: results.csv, results.json; order parameters: order_parameters.json. "
                 f"krenorm {result.provenance.get('krenorm')}, torch "
                 f"{result.provenance.get('torch')}.")
    return "\n".join(lines) + "\n"


def _sampler_diagnostics(rows) -> list[str]:
    """Per sampled network: effective sample size of the test loss, acceptance and the sampler's
    own warnings (short chains relative to τ, split-R̂ > 1.1)."""
    networks = [r for r in rows if r.source == "network"]
    if not networks:
        return []
    lines = ["## Sampler diagnostics", "",
             "| architecture | N | replicas × steps | ESS (test loss) | acceptance | notes |",
             "|---|---|---|---|---|---|"]
    for r in networks:
        details = r.details
        notes = " ".join(details.get("warnings") or []) or "–"
        lines.append(f"| {r.architecture} | {_format(r.width)} | {details.get('n_replicas')} × "
                     f"{details.get('n_steps')} | {_format(details.get('ess'), 4)} | "
                     f"{_format(details.get('acceptance'), 3)} | {notes} |")
    return [*lines, ""]


def write_report(result) -> Path:
    path = Path(result.output_dir) / "report.md"
    path.write_text(render_report(result))
    return path
