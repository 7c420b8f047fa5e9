"""``mfal report``: figures and one self-contained HTML page of a campaign, from the database alone.

Everything shown is read from the provenance store (campaign record and config
document, cycles, NEB paths, labels, models); the only computation is
evaluating stored refit committees on stored structures. Nothing on disk is
needed besides the database, so a report can be made on any machine that
reaches it.

Figures (PNG, written with matplotlib's Agg canvas, without pyplot's global
state):

``profiles.png``
    NEB energy profile of every explored cycle: committee mean with a band of
    ± one standard deviation of the members' energies relative to their own
    initial state (the same statistic as the barrier spread), and the QMC labels
    selected in that cycle as points with their error bars.
``barrier.png``
    Barrier ± spread against the cycle and against the QMC labels its committee
    was fitted on, with the convergence band (``convergence.tol_energy`` around
    the last barrier) and the system's reference barrier where it has one.
``parity.png``
    Every refit committee against the QMC labels it was fitted on.
``forces.png``
    Force deviation of each refit committee from the DFT-trained base model on
    the anchor structures (RMS and largest, from the refit metrics).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mfal.errors import ConfigError, MfalError

FIGURES = {
    "profiles": "NEB energy profile per cycle",
    "barrier": "Barrier against cycle and QMC labels",
    "parity": "Refit committees against their QMC labels",
    "forces": "Force deviation from the base model",
}
"""Figure file stems and their titles, in page order."""

BAND_COLOR = "tab:blue"
LABEL_COLOR = "tab:red"
REFERENCE_COLOR = "tab:green"


class ReportError(MfalError):
    """A campaign has nothing to report yet (no cycle with a stored NEB path)."""


@dataclass
class CycleView:
    """One explored cycle: its record, NEB path, image structures and the labels selected in it."""

    cycle: int
    record: dict
    path: dict
    images: list
    labels: list[dict] = field(default_factory=list)
    label_images: list[int] = field(default_factory=list)
    reference_energy: float | None = None
    """QMC-scale energy (eV) of this path's initial image: the labels are plotted relative to it."""

    @property
    def coordinate(self) -> np.ndarray:
        """Reaction coordinate (Å): cumulative distance between consecutive images (minimum image)."""
        from ase.geometry import find_mic

        steps = [0.0]
        for before, after in zip(self.images[:-1], self.images[1:]):
            change = after.get_positions() - before.get_positions()
            if after.pbc.any():
                change, _ = find_mic(change, after.cell, after.pbc)
            steps.append(float(np.linalg.norm(change)))
        return np.cumsum(steps)

    @property
    def relative_member_energies(self) -> np.ndarray:
        """(images, members) energies of each member relative to its own initial image (eV)."""
        energies = np.asarray(self.path["member_energies"], dtype=float)
        return energies - energies[0]


@dataclass
class RefitView:
    """A refit committee (made at the end of ``cycle``) and its predictions of the labels it was fitted on."""

    cycle: int
    key: str
    metrics: dict
    labels: list[dict]
    predictions: np.ndarray
    """(members, labels) predicted total energies (eV)."""


@dataclass
class ReportData:
    name: str
    campaign: dict
    config: dict
    cycles: list[CycleView]
    refits: list[RefitView]
    reference: tuple[str, float] | None
    notes: list[str]

    @property
    def tol_energy(self) -> float:
        return float(self.config["convergence"]["tol_energy"])


def collect(store, name: str) -> ReportData:
    """Everything the report shows, read from the store; :class:`ReportError` if no cycle was explored."""
    record = store.get_campaign(name)
    config = record["config"]
    cycle_records = [c for c in store.get_cycles(name) if c.get("barrier") is not None]
    paths = {c["cycle"]: store.get_neb_path(name, c["cycle"]) for c in cycle_records}
    cycle_records = [c for c in cycle_records if paths[c["cycle"]] is not None]
    if not cycle_records:
        raise ReportError(
            f"campaign {name!r} has no finished cycle yet (no NEB path in the database): nothing to report; "
            f"run it first ('mfal campaign run' or rlaunch workers) and follow it with 'mfal history {name}'"
        )
    notes: list[str] = []
    cycles = [
        CycleView(c["cycle"], c, paths[c["cycle"]], [store.get_structure(h) for h in paths[c["cycle"]]["image_hashes"]])
        for c in cycle_records
    ]
    committees = _Committees(store, config)
    refits = _refits(store, committees, cycle_records)
    _attach_labels(cycles, refits)
    _place_labels(committees, cycles, refits, notes)
    return ReportData(name, record, config, cycles, refits, _reference(config, notes), notes)


def _attach_labels(cycles: list[CycleView], refits: list[RefitView]) -> None:
    """Each cycle's labelled selections, read from the refits that used them (a refit uses every label so far)."""
    by_structure = {label["structure_hash"]: label for refit in refits for label in refit.labels}
    for view in cycles:
        hashes = view.path["image_hashes"]
        for structure_hash in view.record.get("selected") or []:
            if structure_hash in by_structure and structure_hash in hashes:
                view.labels.append(by_structure[structure_hash])
                view.label_images.append(hashes.index(structure_hash))


class _Committees:
    """Stored committees loaded once each, with the campaign's dtype and device."""

    def __init__(self, store, config: dict):
        self.store, self.section, self.loaded = store, config["committee"], {}

    def __getitem__(self, key: str):
        from mfal.potentials import Committee

        if key not in self.loaded:
            self.loaded[key] = Committee.from_store(self.store, key, dtype=self.section["dtype"],
                                                    device=self.section["device"])
        return self.loaded[key]


def _refits(store, committees: _Committees, cycle_records) -> list[RefitView]:
    refits = []
    for record in cycle_records:
        key = record.get("refit_model")
        if not key or not store.has_model(key):
            continue
        model, _ = store.get_model(key)
        labels = store.get_labels(model["label_ids"])
        structures = [store.get_structure(label["structure_hash"]) for label in labels]
        predictions = committees[key].evaluate(structures).energies if labels else np.zeros((0, 0))
        refits.append(RefitView(record["cycle"], key, model.get("metrics") or {}, labels, predictions))
    return refits


def _place_labels(committees: _Committees, cycles: list[CycleView], refits: list[RefitView], notes: list[str]) -> None:
    """Put the QMC labels on the scale of the NEB profiles.

    Labels are total energies; a profile is the committee's energy relative to
    its path's initial image, and the two differ by the QMC total energy of that
    initial image, which is rarely labelled itself. The latest refit committee
    was fitted to the QMC total energies (element offsets included), so its mean
    prediction of each path's initial image is the QMC-scale reference
    subtracted from the labels of that path. A label then sits where QMC puts
    it relative to the initial state, up to the refit's own error there, and
    its distance from the band shows how far that cycle's committee was off.
    """
    if not refits:
        if any(view.record.get("selected") for view in cycles):
            notes.append("QMC labels are not shown on the profiles: no refit committee yet to put them on that scale.")
        return
    latest = refits[-1]
    predictions = committees[latest.key].evaluate([view.images[0] for view in cycles])
    for view, energy in zip(cycles, predictions.energy_mean):
        view.reference_energy = float(energy)
    notes.append(f"QMC labels on the profiles are relative to the initial image's energy predicted by the latest "
                 f"refit committee ({latest.key}), fitted on {len(latest.labels)} QMC labels.")


def _reference(config: dict, notes: list[str]) -> tuple[str, float] | None:
    from mfal.config import config_from_dict
    from mfal.runner import reference_barrier

    try:
        reference = reference_barrier(config_from_dict(config, source="stored campaign config"))
    except ConfigError as exc:
        notes.append(f"reference barrier not shown: the stored config does not validate on this machine ({exc}).")
        return None
    qmc = config["qmc"]
    if reference and qmc["backend"] == "surrogate":
        source = qmc.get("calculator") or qmc.get("model_file")
        notes.append(f"The labels come from a surrogate ({source}, noise {qmc.get('noise_sigma_eV', 0):g} eV), not "
                     f"from QMC: the campaign converges to the surrogate's own barrier, not to the {reference[0]} "
                     f"barrier of the real system ({reference[1]:.3f} eV) drawn for comparison.")
        return f"{reference[0]}, real system", reference[1]
    return reference


# -- figures -------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def profiles_figure(data: ReportData) -> Figure:
    n = len(data.cycles)
    columns = min(n, 3)
    rows = -(-n // columns)
    figure = _figure(max(4.2 * columns, 5.5), 3.4 * rows + 0.3)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, view in zip(axes, data.cycles):
        x = view.coordinate
        relative = view.relative_member_energies
        mean, spread = relative.mean(axis=1), relative.std(axis=1)
        ax.fill_between(x, mean - spread, mean + spread, color=BAND_COLOR, alpha=0.25, label="committee ± 1σ")
        ax.plot(x, mean, "o-", color=BAND_COLOR, markersize=3.5, label="committee mean")
        saddle = view.path["saddle_index"]
        ax.plot(x[saddle], mean[saddle], "*", color="black", markersize=10, label="saddle")
        if view.labels and view.reference_energy is not None:
            energies = [label["energy"] - view.reference_energy for label in view.labels]
            errors = [label["error"] for label in view.labels]
            ax.errorbar(x[view.label_images], energies, yerr=errors, fmt="s", color=LABEL_COLOR, markersize=5,
                        capsize=3, label="QMC labels (this cycle)")
        ax.set_title(f"cycle {view.cycle}: barrier {view.path['barrier']:.3f} ± {view.path['barrier_spread']:.3f} eV",
                     fontsize=10)
        ax.set_xlabel("reaction coordinate (Å)")
        ax.grid(alpha=0.3)
    for ax in axes[::columns]:
        ax.set_ylabel("E − E(initial) (eV)")
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8, loc="best")
    if any(view.reference_energy is not None for view in data.cycles):
        figure.suptitle("QMC labels minus the latest refit's energy of the initial image", fontsize=9)
    return figure


def barrier_figure(data: ReportData) -> Figure:
    figure = _figure(10, 4)
    by_cycle, by_labels = figure.subplots(1, 2, sharey=True)
    cycles = [view.cycle for view in data.cycles]
    labels_used = [len(view.record.get("label_ids") or []) for view in data.cycles]
    barriers = np.array([view.path["barrier"] for view in data.cycles])
    spreads = np.array([view.path["barrier_spread"] for view in data.cycles])
    last = barriers[-1]
    for ax, x, xlabel in ((by_cycle, cycles, "cycle"), (by_labels, labels_used, "QMC labels used by the committee")):
        ax.axhspan(last - data.tol_energy, last + data.tol_energy, color="0.85",
                   label=f"last barrier ± tol_energy ({data.tol_energy:g} eV)")
        if data.reference:
            ax.axhline(data.reference[1], color=REFERENCE_COLOR, linestyle="--",
                       label=f"{data.reference[0]}: {data.reference[1]:.3f} eV")
        ax.errorbar(x, barriers, yerr=spreads, fmt="o-", color=BAND_COLOR, capsize=4, label="committee barrier ± spread")
        ax.set_xlabel(xlabel)
        ax.set_xlim(min(x) - 0.5, max(x) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    by_cycle.set_ylabel("barrier (eV)")
    by_cycle.legend(fontsize=8, loc="best")
    return figure


def parity_figure(data: ReportData) -> Figure:
    refits = [refit for refit in data.refits if refit.labels]
    if not refits:
        figure = _figure(5, 2)
        figure.text(0.5, 0.5, "no refit committee yet", ha="center", va="center")
        return figure
    columns = min(len(refits), 3)
    rows = -(-len(refits) // columns)
    figure = _figure(3.8 * columns, 3.6 * rows)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, refit in zip(axes, refits):
        energies = np.array([label["energy"] for label in refit.labels])
        errors = np.array([label["error"] for label in refit.labels])
        mean, spread = refit.predictions.mean(axis=0), refit.predictions.std(axis=0)
        shift = energies.mean()
        ax.errorbar(energies - shift, mean - shift, xerr=errors, yerr=spread, fmt="o", color=BAND_COLOR, capsize=3,
                    markersize=4)
        low = min((energies - errors).min(), (mean - spread).min()) - shift
        high = max((energies + errors).max(), (mean + spread).max()) - shift
        pad = 0.08 * (high - low) or 0.01
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.5", linewidth=1)
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal")
        rmse = float(np.sqrt(np.mean((mean - energies) ** 2)))
        chi2 = refit.metrics.get("chi2_per_label")
        text = f"{len(energies)} labels\nRMSE {_energy(rmse)}" + (f"\nχ²/label {chi2:.3g}" if chi2 is not None else "")
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ax.set_title(f"refit after cycle {refit.cycle}", fontsize=10)
        ax.set_xlabel(f"QMC label {'−' if shift >= 0 else '+'} {abs(shift):.3f} (eV)")
        ax.grid(alpha=0.3)
    for ax in axes[::columns]:
        ax.set_ylabel("committee mean − same shift (eV)")
    for ax in axes[len(refits):]:
        ax.set_visible(False)
    return figure


def forces_figure(data: ReportData) -> Figure:
    """Committee of cycle k against k: the base (k = 0) deviates by 0; refit c explores cycle c + 1."""
    figure = _figure(6, 4)
    ax = figure.subplots()
    committees = [0] + [refit.cycle + 1 for refit in data.refits]
    rms = [np.zeros(1)] + [np.asarray(refit.metrics.get("force_rms") or [np.nan]) for refit in data.refits]
    largest = [np.zeros(1)] + [np.asarray(refit.metrics.get("force_max") or [np.nan]) for refit in data.refits]
    series = ((rms, "o-", "RMS over anchor atoms", -0.04), (largest, "s--", "largest atom", 0.04))
    for values, marker, label, dodge in series:
        centre = np.array([v.mean() for v in values])
        low = centre - np.array([v.min() for v in values])
        high = np.array([v.max() for v in values]) - centre
        ax.errorbar(np.array(committees) + dodge, centre, yerr=[low, high], fmt=marker, capsize=4,
                    label=f"{label}: member mean and range")
    tolerances = {refit.metrics.get("force_rms_tolerance") for refit in data.refits} - {None}
    for tolerance in sorted(tolerances):
        ax.axhline(tolerance, color="tab:red", linestyle=":", label=f"RMS tolerance {tolerance:g} eV/Å")
    ax.set_xlabel("committee of cycle (0 = DFT-trained base)")
    ax.set_ylabel("|ΔF| from the base model (eV/Å)")
    ax.set_xlim(-0.5, committees[-1] + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figure


# -- page ----------------------------------------------------------------------------
def summary_rows(data: ReportData) -> list[dict]:
    """One row per explored cycle, with its committee's refit metrics where it is a refit."""
    refit_of = {refit.cycle + 1: refit for refit in data.refits}
    rows = []
    for view in data.cycles:
        metrics = refit_of[view.cycle].metrics if view.cycle in refit_of else {}
        calibration = metrics.get("calibration") or {}
        started, finished = view.record.get("started_at"), view.record.get("finished_at")
        rows.append({
            "cycle": view.cycle,
            "committee": view.path.get("model_key", "-"),
            "barrier (eV)": f"{view.path['barrier']:.4f} ± {view.path['barrier_spread']:.4f}",
            "labels used": len(view.record.get("label_ids") or []),
            "NEB converged": "yes" if view.path.get("converged") else "no",
            "selected for QMC": len(view.record.get("selected") or []),
            "χ²/label": _fmt(metrics.get("chi2_per_label"), "{:.3g}"),
            "force RMS, worst member (eV/Å)": _fmt(metrics.get("force_rms_max"), "{:.4f}"),
            "LOO within 1σ / 2σ": (f"{calibration['within_1_sigma']:.0%} / {calibration['within_2_sigma']:.0%}"
                                   if calibration else "-"),
            "wall time (s)": _fmt((finished - started).total_seconds() if started and finished else None, "{:.1f}"),
        })
    return rows


def _energy(value: float) -> str:
    """An energy in meV below 1 eV, else in eV."""
    return f"{1000 * value:.1f} meV" if abs(value) < 1 else f"{value:.3g} eV"


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _headline(data: ReportData) -> str:
    record, config = data.campaign, data.config
    parts = [f"state <b>{html.escape(str(record.get('state')))}</b>",
             f"system {html.escape(config['system']['kind'])}",
             f"QMC backend {html.escape(config['qmc']['backend'])}",
             f"acquisition {html.escape(str(config['acquisition']['strategy']))} "
             f"× {config['acquisition']['batch_size']} per cycle"]
    final = record.get("final")
    if final:
        parts.append(f"final barrier <b>{final['barrier']:.3f} ± {final['barrier_spread']:.3f} eV</b> "
                     f"after {final['n_labels']} QMC labels (starting committee {final['base_barrier']:.3f} eV; "
                     f"{html.escape(str(final['reason']))})")
    if data.reference:
        parts.append(f"{html.escape(data.reference[0])} barrier {data.reference[1]:.3f} eV")
    return "<br>".join(parts)


def _html(data: ReportData, images: dict[str, bytes]) -> str:
    rows = summary_rows(data)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in data.notes)
    sections = "".join(
        f"<h2>{html.escape(FIGURES[stem])}</h2>"
        f"<img alt=\"{stem}\" src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\">"
        for stem, png in images.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mfal report: {html.escape(data.name)}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:1em auto;padding:0 1em}}
table{{border-collapse:collapse;font-size:0.9em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>mfal campaign {html.escape(data.name)}</h1><p>{_headline(data)}</p>
<h2>Cycles</h2><table><tr>{head}</tr>{body}</table><ul>{notes}</ul>{sections}
</body></html>
"""


def write_report(store, campaign: str, out_dir: str | Path) -> Path:
    """Write the four PNG figures and ``report.html`` (images inlined) into ``out_dir``; return the page."""
    data = collect(store, campaign)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    builders = {"profiles": profiles_figure, "barrier": barrier_figure, "parity": parity_figure,
                "forces": forces_figure}
    images = {}
    for stem, build in builders.items():
        images[stem] = _png(build(data))
        (out / f"{stem}.png").write_bytes(images[stem])
    page = out / "report.html"
    page.write_text(_html(data, images), encoding="utf-8")
    return page
