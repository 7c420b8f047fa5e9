"""Benchmark: how many QMC labels each acquisition strategy needs to bring the barrier to the truth.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_acquisition.py --out bench_out/
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_acquisition.py --out bench_out/ \\
        --committee my_committee.pt --seeds 2 --cycles 4 --strategies barrier_variance random

    # two processes side by side, seeds 0-1 and 2-3, then one summary of both
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_acquisition.py --out a/ --seeds 2 --no-fireworks &
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_acquisition.py --out b/ --seeds 2 --first-seed 2 --no-fireworks
    .venv/bin/python scripts/bench_acquisition.py --summarise a/results.json b/results.json --out both/

It lives in ``scripts/`` beside the other benchmarks (``bench_neb.py``,
``bench_refit.py``): one folder for every script that is run by hand and
prints measured numbers, none of which the tests import.

The "QMC" is a surrogate whose truth is known, plus Gaussian noise of
``--noise`` eV like a DMC error bar: for H3 the LEPS surface
(``mfal.potentials.analytic:LEPSCalculator``); for MoS2 the base committee
(or ``--truth-model``) plus a stretched-bond energy
(``mfal.potentials.bond_stretch.StretchedBondEnergy``, ``--correction-strength``
eV for each S-Mo bond at the 2.7 Å top of its bump; default 0.32 eV), which
raises the hop's saddle, where the hopping S bridges two Mo at 2.65 Å, and
leaves intact MoS2 alone: on the shipped committee it lifts the barrier from
2.118 to 2.43 eV, a correction of the order of the paper's QMC minus DFT
(0.55 eV). The true barrier is the truth's own climbing-image NEB (mfal's NEB on
the noise-free surface), computed here between endpoints relaxed on the truth,
with the campaign's image count and a tighter force threshold.

Each campaign is the system's shipped config (``configs/h3_pyqmc.yaml``,
``configs/mos2_surrogate.yaml``) with the surrogate as its QMC backend and a
fixed budget of ``--cycles`` refits (the convergence rule never stops it
early, so that "stays within the threshold" can be seen). Its cycles run in a
plain loop of the steps the FireTasks call (:mod:`mfal.steps`: explore,
converge, select, label, refit) on a store, without FireWorks. Strategies:
``barrier_variance`` (mfal's default), ``spread``, ``random``, ``all`` (every
image of every path), and ``paper``: the protocol of the reference paper as it
reads, every image of the base committee's path labelled once, one refit, one
final NEB (the same steps with strategy ``all`` and one cycle). Seeds change
the surrogate's noise, the random picks, the refit's resampling and the
anchor subset; the base committee is the same for all.

Reported per strategy: labels until |barrier - truth| <= ``--threshold`` for
good, the same for ``--tight-threshold``, labels until it first holds even if
it does not last (median over seeds, a seed that
never got there counting as infinitely many), the final |error|, the fraction of refit cycles (1 and later) whose
truth lies within 1 and 2 committee barrier spreads, and where the config's
own convergence rule would have stopped (labels, |error|). Writes
``efficiency.png`` (|error| and spread against labels, median and min-max
band over seeds) and ``results.json`` (every cycle of every run) to ``--out``.

With ``--fireworks`` (default on) one campaign with the config's own
convergence rule also runs through FireWorks: the same ``rapidfire`` loop that
``rlaunch rapidfire`` runs, in this process, on the same database. The time
spent inside the mfal steps is science; the rest of each cycle's wall time
(FireWorks checking out, launching and completing fireworks, adding the next
ones, tasks loading the campaign from the store) is orchestration overhead.

Every campaign gets a database of its own (named like the campaign) on an
embedded server under ``--out``/home, so that no campaign finds another's labels
of the same structures; they stay there for reports afterwards. The base
committee's force responses on refit anchors are the exception: a response
depends on nothing but its member and structure (its key), so each campaign's
database starts with those the runs before it computed, as a campaign's own
store keeps them from cycle to cycle; with 32-channel MoS2 members they are most
of a run's time. Reports afterwards:
``MFAL_HOME=OUT/home mfal db start``, then
``MFAL_MONGO_URI=mongodb://127.0.0.1:PORT/CAMPAIGN mfal report CAMPAIGN -o DIR``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch's OpenMP starts

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mfal import steps  # noqa: E402
from mfal.config import (  # noqa: E402
    REPO_DATA,
    CampaignConfig,
    CommitteeSection,
    ConvergenceSection,
    config_from_dict,
    read_config_document,
)
from mfal.efficiency import (  # noqa: E402
    HistoryPoint,
    band,
    coverage,
    labels_to_first_reach,
    labels_to_threshold,
    median_labels,
    stopping_point,
)
from mfal.errors import ConfigError, MfalError  # noqa: E402
from mfal.potentials.bond_stretch import DEFAULT_STRENGTH  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SYSTEM_CONFIGS = {"h3": REPO / "configs" / "h3_pyqmc.yaml", "mos2": REPO / "configs" / "mos2_surrogate.yaml"}
LEPS = "mfal.potentials.analytic:LEPSCalculator"
STRETCHED_BONDS = "mfal.potentials.bond_stretch:StretchedBondEnergy"
STRATEGIES = ("barrier_variance", "random", "paper", "spread", "all")
DEFAULT_STRATEGY = "barrier_variance"
STEP_NAMES = ("explore", "converge", "select", "label", "refit")
TRUTH_FMAX = 0.002
"""eV/Å: force threshold of the truth's own NEB (tighter than any campaign's)."""
TRUTH_MAX_STEPS = 5000
NO_LABEL_LIMIT = 1_000_000
"""max_labels of a fixed-budget run: the budget is the number of cycles."""


# -- campaign configs ----------------------------------------------------------------
def committee_section(system: str, committee: Path | None, anchors: Path | None, max_anchors: int) -> tuple[dict, str]:
    """The campaign's committee section and a line saying which committee it is."""
    shipped = REPO_DATA / system / "committee.pt"
    if committee is None:
        if not shipped.is_file():
            raise ConfigError(f"no shipped committee {shipped.relative_to(REPO)} yet; pass one with --committee FILE")
        return {"shipped": system, "max_anchors": max_anchors}, f"shipped committee {shipped.relative_to(REPO)}"
    dataset = REPO_DATA / system / f"{system}_pbe.extxyz"
    section = {"files": [str(committee.resolve())], "max_anchors": max_anchors}
    anchor_file = anchors or (dataset if dataset.is_file() else None)
    if anchor_file is not None:
        section["anchors"] = str(anchor_file.resolve())
    else:
        section["max_anchors"] = 0
    return section, f"committee file {committee} (anchors: {anchor_file or 'none'})"


def truth_section(system: str, truth_model: Path | None, committee: Path | None, strength: float) -> dict:
    """The surrogate "QMC": for H3 the LEPS surface (or ``truth_model``); for MoS2 a model (``truth_model``,
    default the base committee) plus the stretched-bond energy of ``strength`` eV per bond."""
    if system == "h3":
        if truth_model is not None:
            return {"backend": "surrogate", "model_file": str(truth_model.resolve())}
        return {"backend": "surrogate", "calculator": LEPS}
    model = truth_model or committee or REPO_DATA / system / "committee.pt"
    section = {"backend": "surrogate", "model_file": str(model.resolve())}
    if strength > 0:
        section.update(calculator=STRETCHED_BONDS, calculator_kwargs={"strength": strength})
    return section


def campaign_config(args, strategy: str, seed: int, committee: dict, truth: dict, work: Path,
                    name: str | None = None, fixed_budget: bool = True) -> CampaignConfig:
    """The system's shipped config with the surrogate truth, this strategy and seed.

    ``fixed_budget``: exactly ``--cycles`` refits (``paper``: one), no early stop, NEB to
    ``--neb-fmax``, no leave-one-out calibration of the refits (a diagnostic for reports that
    leaves the committee unchanged and costs a refit per label); otherwise the config's own NEB, anchor count and convergence settings.
    """
    path = SYSTEM_CONFIGS[args.system]
    document = read_config_document(path)
    document["name"] = name or f"bench-{args.system}-{strategy}-s{seed}"
    document["seed"] = seed
    if not fixed_budget and committee["max_anchors"]:
        own = document.get("committee", {}).get("max_anchors", CommitteeSection.model_fields["max_anchors"].default)
        committee = {**committee, "max_anchors": own}
    document["committee"] = committee
    document["qmc"] = {**truth, "noise_sigma_eV": args.noise, "seed": seed}
    document["acquisition"] = {**document.get("acquisition", {}), "batch_size": args.batch_size,
                               "strategy": "all" if strategy == "paper" else strategy}
    document["refit"] = {**document.get("refit", {}), "seed": seed}
    if fixed_budget:
        document["refit"]["calibrate"] = False
        document["neb"] = {**document.get("neb", {}), "fmax": args.neb_fmax}
        document["convergence"] = {**document.get("convergence", {}), "tol_energy": 1e-12, "n_consecutive": 1,
                                   "max_cycles": 1 if strategy == "paper" else args.cycles,
                                   "max_labels": NO_LABEL_LIMIT}
    document["fireworks"] = {**document.get("fireworks", {}), "qmc_work_dir": str(work / "qmc_jobs")}
    return config_from_dict(document, base_dir=path.parent, source=f"benchmark config from {path.name}")


def own_convergence(args) -> ConvergenceSection:
    """The shipped config's convergence rule (what a real campaign would stop by)."""
    return ConvergenceSection(**read_config_document(SYSTEM_CONFIGS[args.system]).get("convergence", {}))


# -- the truth ---------------------------------------------------------------------
def true_barrier(config: CampaignConfig) -> dict:
    """The surrogate truth's own climbing-image NEB barrier between endpoints relaxed on it (eV).

    mfal's NEB on the truth's noise-free surface (:class:`~mfal.qmc.surrogate.ReferenceSurface`):
    a model-based truth runs all images in one batched call per step.
    """
    from mfal.neb import idpp_path, relax_endpoints, run_neb
    from mfal.qmc.surrogate import ReferenceSurface

    settings = config.neb
    surface = ReferenceSurface(config.qmc)
    initial, final = steps.endpoints(config)
    if settings.relax_endpoints:
        initial, final, _ = relax_endpoints(surface, initial, final, fmax=settings.endpoint_fmax,
                                            max_steps=settings.max_steps)
    result = run_neb(surface, idpp_path(initial, final, settings.n_images), fmax=TRUTH_FMAX,
                     max_steps=TRUTH_MAX_STEPS, pre_relax_fmax=0.5, spring_constant=settings.spring)
    return {"barrier": result.barrier, "converged": result.converged, "fmax": TRUTH_FMAX,
            "saddle_index": result.saddle_index, "energies": (result.energies - result.energies[0]).tolist()}


# -- one campaign without FireWorks ------------------------------------------------
@contextlib.contextmanager
def timed(times: dict, step: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        times[step] = times.get(step, 0.0) + time.perf_counter() - start


def run_plain(store, config: CampaignConfig) -> dict:
    """The campaign's cycles as a loop of the steps the FireTasks call; per-cycle step times."""
    campaign = steps.register(store, config)
    step_times = []
    for cycle in range(config.convergence.max_cycles + 1):
        times: dict[str, float] = {}
        step_times.append(times)
        with timed(times, "explore"):
            steps.explore(campaign, cycle)
        with timed(times, "converge"):
            finished = steps.converge(campaign, cycle)["finished"]
        if finished:
            break
        with timed(times, "select"):
            selected = steps.select(campaign, cycle)
        with timed(times, "label"):
            for structure_hash in selected:
                steps.label(campaign, structure_hash)
        with timed(times, "refit"):
            steps.refit(campaign, cycle)
    rows = store.history(config.name)
    return {"cycles": [{"cycle": row["cycle"], "n_labels": row["n_labels"], "barrier": row["barrier"],
                        "spread": row["barrier_spread"], "step_seconds": times}
                       for row, times in zip(rows, step_times)]}


def history_points(run: dict) -> list[HistoryPoint]:
    return [HistoryPoint(row["n_labels"], row["barrier"], row["spread"]) for row in run["cycles"]]


# -- summary -----------------------------------------------------------------------
def summarise(runs: list[dict], truth: float, thresholds: list[float], rules, batch_size: int) -> dict:
    """One strategy's numbers over its seeds (see the module docstring)."""
    histories = [history_points(run) for run in runs]
    to_threshold = {str(threshold): [labels_to_threshold(history, truth, threshold) for history in histories]
                    for threshold in thresholds}
    first_reach = [labels_to_first_reach(history, truth, thresholds[0]) for history in histories]
    refit_cycles = [history[1:] for history in histories if len(history) > 1]
    within = {}
    for n_sigma in (1, 2):
        counts = [coverage(history, truth, n_sigma) for history in refit_cycles]
        inside, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        within[n_sigma] = inside / total if total else float("nan")
    stops = [stopping_point(history, rules, batch_size) for history in histories]
    return {
        "labels_to_threshold": to_threshold,
        "median_labels_to_threshold": {key: median_labels(values) for key, values in to_threshold.items()},
        "labels_to_first_reach": first_reach,
        "median_labels_to_first_reach": median_labels(first_reach),
        "final_labels": [history[-1].n_labels for history in histories],
        "final_abs_error": [abs(history[-1].barrier - truth) for history in histories],
        "within_1_sigma": within[1],
        "within_2_sigma": within[2],
        "stop_cycle": [cycle for cycle, _ in stops],
        "stop_labels": [point.n_labels for _, point in stops],
        "stop_abs_error": [abs(point.barrier - truth) for _, point in stops],
        "wall_seconds": [run["wall_seconds"] for run in runs],
    }


def _labels_cell(values: list[int | None], median: float) -> str:
    """'median [min-max] k/n': labels to a threshold over seeds, and how many seeds got there."""
    reached = [value for value in values if value is not None]
    count = f"{len(reached)}/{len(values)}"
    if np.isfinite(median):
        return f"{median:.0f} [{min(reached)}-{max(reached)}] {count}"
    return f"not reached {count}"


def table(summaries: dict[str, dict], thresholds: list[float]) -> str:
    columns = "".join(f" {'labels to ' + format(t, 'g') + ' eV':>20}" for t in thresholds)
    columns += f" {'first within ' + format(thresholds[0], 'g'):>20}"
    header = (f"{'strategy':<17}{columns} {'final |err| eV':>17} {'final labels':>12} {'in 1σ':>6} {'in 2σ':>6} "
              f"{'own stop: labels, |err| eV':>27} {'s/run':>6}")
    lines = [header, "-" * len(header)]
    for strategy, s in summaries.items():
        cells = "".join(f" {_labels_cell(s['labels_to_threshold'][str(t)], s['median_labels_to_threshold'][str(t)]):>20}"
                        for t in thresholds)
        cells += f" {_labels_cell(s['labels_to_first_reach'], s['median_labels_to_first_reach']):>20}"
        errors = s["final_abs_error"]
        stop = f"{np.median(s['stop_labels']):.0f}, {np.median(s['stop_abs_error']):.3f}"
        lines.append(
            f"{strategy:<17}{cells} {np.median(errors):>7.3f} [≤{max(errors):.3f}] "
            f"{np.median(s['final_labels']):>12.0f} {s['within_1_sigma']:>6.2f} {s['within_2_sigma']:>6.2f} "
            f"{stop:>27} {np.median(s['wall_seconds']):>6.0f}")
    return "\n".join(lines)


def label_ratio(summaries: dict[str, dict], threshold: float) -> str:
    """labels(barrier_variance) / labels(random) to reach ``threshold``, medians over seeds."""
    name = f"labels(barrier_variance)/labels(random) to {threshold:g} eV"
    if DEFAULT_STRATEGY not in summaries or "random" not in summaries:
        return f"{name}: needs both strategies"
    default = summaries[DEFAULT_STRATEGY]["median_labels_to_threshold"][str(threshold)]
    random_ = summaries["random"]["median_labels_to_threshold"][str(threshold)]
    if not np.isfinite(default):
        return f"{name}: barrier_variance did not reach it (median over seeds)"
    if not np.isfinite(random_):
        return (f"{name} < {default:.0f}/{max(summaries['random']['final_labels'])} "
                "(random did not reach it within the budget, median over seeds)")
    return f"{name} = {default:.0f}/{random_:.0f} = {default / random_:.2f} (target <= 0.5)"


# -- figure ------------------------------------------------------------------------
def plot(results: dict, path: Path) -> None:
    """|error| and committee barrier spread against labels: median over seeds and min-max band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    truth, threshold = results["truth"]["barrier"], results["threshold"]
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    error_axes, spread_axes = figure.subplots(1, 2, sharex=True)
    for index, (strategy, runs) in enumerate(results["runs"].items()):
        color = f"C{index}"
        labels = band([[row["n_labels"] for row in run["cycles"]] for run in runs])["median"]
        errors = band([[abs(row["barrier"] - truth) for row in run["cycles"]] for run in runs])
        spreads = band([[row["spread"] for row in run["cycles"]] for run in runs])
        # The paper protocol has no cycles in between: its two points are joined by a dotted line only.
        # Its labels are those of `all`'s first cycle, so its open squares are drawn on top of that curve.
        style = {"marker": "s", "linestyle": ":", "markersize": 9, "markerfacecolor": "none", "zorder": 3} \
            if strategy == "paper" else {"marker": "o", "markersize": 4}
        for axes, values in ((error_axes, errors), (spread_axes, spreads)):
            axes.fill_between(labels, values["min"], values["max"], color=color, alpha=0.18, linewidth=0)
            axes.plot(labels, values["median"], color=color, label=strategy, **style)
    error_axes.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g} eV")
    if results["noise"] > 0:
        error_axes.axhline(results["noise"], color="0.5", linestyle=":", linewidth=1,
                           label=f"noise of one label {results['noise']:g} eV")
    error_axes.set_ylabel("|barrier − true barrier| (eV)")
    error_axes.set_title(f"Barrier error (true barrier {truth:.3f} eV)")
    spread_axes.set_ylabel("committee barrier spread σ (eV)")
    spread_axes.set_title("Predicted uncertainty")
    for axes in (error_axes, spread_axes):
        axes.set_yscale("log")
        axes.set_xlabel("QMC labels used")
        axes.grid(True, which="major", alpha=0.3)
    error_axes.legend(fontsize=8)
    seeds = len(next(iter(results["runs"].values())))
    figure.suptitle(f"{results['system'].upper()}: median over {seeds} seed(s), band min-max; "
                    f"surrogate noise {results['noise']:g} eV", fontsize=10)
    FigureCanvasAgg(figure).print_png(str(path))


# -- the FireWorks path ------------------------------------------------------------
@contextlib.contextmanager
def recorded_steps(records: list):
    """Wrap the mfal steps the FireTasks call so each call's start and end are recorded."""
    originals = {name: getattr(steps, name) for name in STEP_NAMES}

    def wrapper(name, function):
        def timed_step(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                records.append((name, start, time.perf_counter()))
        return timed_step

    for name, function in originals.items():
        setattr(steps, name, wrapper(name, function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(steps, name, function)


def fireworks_overhead(target, store, config: CampaignConfig, work: Path) -> dict:
    """Run one campaign through FireWorks' rapidfire; per complete cycle: wall, science and overhead."""
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    from mfal.campaign import add_campaign

    launchpad = target.launchpad()
    records: list[tuple[str, float, float]] = []
    launches = work / "launches"
    launches.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    add_campaign(launchpad, store, config)
    with recorded_steps(records):
        rapidfire(launchpad, FWorker(), m_dir=str(launches), nlaunches=0, strm_lvl="ERROR")
    total = time.perf_counter() - start
    explores = [begin for name, begin, _ in records if name == "explore"]
    cycles = []
    for cycle, (begin, end) in enumerate(zip(explores[:-1], explores[1:])):
        inside = [(name, b, e) for name, b, e in records if begin <= b < end]
        science = sum(e - b for _, b, e in inside)
        cycles.append({"cycle": cycle, "wall_seconds": end - begin, "science_seconds": science,
                       "overhead_fraction": 1.0 - science / (end - begin),
                       "fireworks": len(inside)})
    state = store.get_campaign(config.name)["state"]
    return {"campaign": config.name, "state": state, "total_seconds": total, "cycles": cycles,
            "overhead_fraction": (1.0 - sum(c["science_seconds"] for c in cycles) / sum(c["wall_seconds"] for c in cycles)
                                  if cycles else float("nan"))}


def share_force_responses(source, target) -> None:
    """Copy the force responses kept in store ``source`` into ``target``, a new campaign's empty store."""
    records = list(source.force_responses.find())
    if records:
        target.force_responses.insert_many(records)


def campaign_target(server, name: str):
    """The embedded server's database named after the campaign."""
    from dataclasses import replace

    return replace(server, name=name, source=f"benchmark database {name}")


# -- main --------------------------------------------------------------------------
def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, help="output folder (must not hold a previous run)")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="RESULTS_JSON",
                        help="only summarise results.json files written before (an interrupted run, or runs of "
                             "other seeds side by side): table, ratio and figure beside the file, or in --out "
                             "for several merged")
    parser.add_argument("--system", choices=sorted(SYSTEM_CONFIGS), default="h3")
    parser.add_argument("--committee", type=Path, default=None,
                        help="base committee file (default: the shipped data/<system>/committee.pt)")
    parser.add_argument("--anchors", type=Path, default=None,
                        help="anchor structures for --committee (default: data/<system>/<system>_pbe.extxyz)")
    parser.add_argument("--max-anchors", type=int, default=CommitteeSection.model_fields["max_anchors"].default,
                        help="DFT anchor structures of each refit (default: a campaign's default). Fewer make "
                             "the runs faster but leave weight directions the anchors do not see free: with 30, "
                             "refits on 9+ labels sent the H3 barrier to 0 or several eV in some seeds")
    parser.add_argument("--truth-model", type=Path, default=None,
                        help="MACE model under the truth (h3 default: LEPS instead; mos2 default: the base committee)")
    parser.add_argument("--correction-strength", type=float, default=DEFAULT_STRENGTH,
                        help="mos2: strength (eV per stretched S-Mo bond) of the energy added to the truth "
                             "model (mfal.potentials.bond_stretch); 0 for none")
    parser.add_argument("--strategies", nargs="*", choices=STRATEGIES, default=list(STRATEGIES),
                        help="none: only the FireWorks overhead")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run are first-seed ... first-seed + seeds - 1 (split seeds across processes)")
    parser.add_argument("--cycles", type=int, default=5, help="refit cycles per run (paper: always 1)")
    parser.add_argument("--batch-size", type=int, default=3, help="labels per cycle (not for all/paper)")
    parser.add_argument("--neb-fmax", type=float, default=0.05,
                        help="NEB force threshold of the fixed-budget runs, eV/Å (the FireWorks run keeps the config's)")
    parser.add_argument("--noise", type=float, default=0.01, help="surrogate noise sigma, eV")
    parser.add_argument("--threshold", type=float, default=0.05, help="|barrier - truth| target, eV")
    parser.add_argument("--tight-threshold", type=float, default=0.02,
                        help="a second, tighter |barrier - truth| target (eV) reported beside --threshold")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--fireworks", action=argparse.BooleanOptionalAction, default=True,
                        help="also run one campaign through FireWorks and measure its overhead")
    args = parser.parse_args()
    if min(args.seeds, args.cycles, args.batch_size) < 1 or min(args.noise, args.correction_strength, args.max_anchors,
                                                                 args.first_seed) < 0 \
            or min(args.threshold, args.tight_threshold, args.neb_fmax) <= 0:
        parser.error("--seeds, --cycles and --batch-size must be >= 1, --noise, --correction-strength, "
                     "--max-anchors and --first-seed >= 0, --threshold, --tight-threshold and --neb-fmax > 0")
    for option in ("committee", "anchors", "truth_model"):
        path = getattr(args, option)
        if path is not None and not path.is_file():
            parser.error(f"--{option.replace('_', '-')} {path}: no such file")
    if args.summarise is not None:
        for path in args.summarise:
            if not path.is_file():
                parser.error(f"--summarise {path}: no such file")
        if len(args.summarise) > 1 and args.out is None:
            parser.error("--out is required to merge several --summarise files")
        return args
    if args.out is None:
        parser.error("--out is required (or --summarise RESULTS_JSON)")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty; give a new folder (its database would mix two runs)")
    return args


def main() -> None:
    args = parse_args()
    if args.summarise is not None:
        results = merged_results([json.loads(path.read_text()) for path in args.summarise])
        results["tight_threshold"] = args.tight_threshold
        out = args.out or args.summarise[0].parent
        out.mkdir(parents=True, exist_ok=True)
        summarise_results(results, out)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()
    os.environ["MFAL_HOME"] = str(args.out / "home")  # the benchmark's own embedded database

    import torch

    from mfal.connection import embedded_target
    from mfal.db import EmbeddedServer
    from mfal.store import Store

    torch.set_num_threads(args.threads)
    committee, committee_line = committee_section(args.system, args.committee, args.anchors, args.max_anchors)
    truth_qmc = truth_section(args.system, args.truth_model, args.committee, args.correction_strength)
    work = args.out / "work"
    rules = own_convergence(args)
    probe = campaign_config(args, DEFAULT_STRATEGY, 0, committee, truth_qmc, work)
    start = time.perf_counter()
    truth = true_barrier(probe)
    print(f"{committee_line}\ntrue barrier (surrogate's own CI-NEB, fmax {TRUTH_FMAX} eV/Å): {truth['barrier']:.4f} eV "
          f"(converged {truth['converged']}, {time.perf_counter() - start:.1f} s)", flush=True)

    results = {"system": args.system, "committee": committee_line, "truth": truth, "noise": args.noise,
               "threshold": args.threshold, "tight_threshold": args.tight_threshold, "batch_size": args.batch_size, "cycles": args.cycles,
               "neb_fmax": args.neb_fmax, "max_anchors": args.max_anchors, "seeds": args.seeds,
               "first_seed": args.first_seed,
               "own_convergence": rules.model_dump(), "runs": {}}
    server = embedded_target(start=True)
    try:
        previous = None
        # seeds outermost: an interrupted benchmark has every strategy alike
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in args.strategies:
                config = campaign_config(args, strategy, seed, committee, truth_qmc, work)
                store = Store.from_target(campaign_target(server, config.name))
                if previous is not None:
                    share_force_responses(previous, store)
                start = time.perf_counter()
                run = run_plain(store, config)
                previous = store
                run.update(campaign=config.name, seed=seed, wall_seconds=time.perf_counter() - start)
                results["runs"].setdefault(strategy, []).append(run)
                write_results(results, args.out)
                last = run["cycles"][-1]
                print(f"{config.name}: {len(run['cycles']) - 1} refits, {last['n_labels']} labels, barrier "
                      f"{last['barrier']:.3f} ± {last['spread']:.3f} eV (|error| {abs(last['barrier'] - truth['barrier']):.3f}), "
                      f"{run['wall_seconds']:.0f} s", flush=True)
        if results["runs"]:
            summarise_results(results, args.out)
        if args.fireworks:
            config = campaign_config(args, DEFAULT_STRATEGY, 0, committee, truth_qmc, work,
                                     name=f"bench-{args.system}-fireworks", fixed_budget=False)
            target = campaign_target(server, config.name)
            overhead = fireworks_overhead(target, Store.from_target(target), config, work)
            results["fireworks"] = overhead
            write_results(results, args.out)
            per_cycle = ", ".join(f"{100 * c['overhead_fraction']:.1f}% of {c['wall_seconds']:.1f} s"
                                  for c in overhead["cycles"])
            print(f"FireWorks path ({config.name}, {overhead['state']}): orchestration overhead "
                  f"{100 * overhead['overhead_fraction']:.1f}% of the cycles' wall time (target < 5%); "
                  f"per cycle: {per_cycle}")
        figure = " (and efficiency.png)" if results["runs"] else ""
        print(f"wrote {args.out}/results.json{figure}; for a report of a stored campaign: "
              f"MFAL_HOME={args.out / 'home'} mfal db start; MFAL_MONGO_URI=mongodb://{server.host}:{server.port}/CAMPAIGN "
              f"mfal report CAMPAIGN -o DIR")
    finally:
        EmbeddedServer().stop()


def summarise_results(results: dict, out: Path) -> None:
    """Table, label ratios and figure from the raw runs; written into ``out`` with the raw numbers."""
    rules = ConvergenceSection(**results["own_convergence"])
    truth, thresholds = results["truth"]["barrier"], [results["threshold"], results["tight_threshold"]]
    results["summaries"] = {strategy: summarise(runs, truth, thresholds, rules, results["batch_size"])
                            for strategy, runs in results["runs"].items()}
    results["ratio"] = [label_ratio(results["summaries"], threshold) for threshold in thresholds]
    print("\n" + table(results["summaries"], thresholds) + "\n" + "\n".join(results["ratio"]), flush=True)
    plot(results, out / "efficiency.png")
    write_results(results, out)


MERGE_KEYS = ("system", "committee", "noise", "threshold", "batch_size", "cycles", "neb_fmax", "max_anchors",
              "own_convergence")
"""What runs must share to be summarised together (the truth too, within 1e-9 eV)."""


def merged_results(parts: list[dict]) -> dict:
    """One results dict from several benchmark runs of the same settings (e.g. other seeds side by side).

    Runs of one strategy and seed found twice are refused: they would count twice.
    """
    merged = {**parts[0], "runs": {}}
    seen = set()
    for part in parts:
        differing = [key for key in MERGE_KEYS if part.get(key) != merged.get(key)]
        if abs(part["truth"]["barrier"] - merged["truth"]["barrier"]) > 1e-9:
            differing.append("truth")
        if differing:
            raise ConfigError(f"cannot merge benchmark results that differ in {', '.join(differing)}")
        for strategy, runs in part["runs"].items():
            for run in runs:
                if (strategy, run["seed"]) in seen:
                    raise ConfigError(f"strategy {strategy} seed {run['seed']} is in more than one results file")
                seen.add((strategy, run["seed"]))
                merged["runs"].setdefault(strategy, []).append(run)
    merged["seeds"] = len({seed for _, seed in seen})
    return merged


def write_results(results: dict, out: Path) -> None:
    """The raw numbers so far (rewritten after every run, so an interrupted benchmark keeps them)."""
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    try:
        main()
    except MfalError as exc:
        raise SystemExit(f"bench_acquisition: error: {exc}") from None
