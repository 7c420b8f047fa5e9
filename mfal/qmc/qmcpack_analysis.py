"""Turn a finished QMCPACK DMC series into a label, or say why it cannot be one.

Every check runs before a number leaves this module, because a label, once
stored, is never recomputed: a missing or truncated ``scalar.dat``, NaN or inf in
the local energy, too few blocks after the equilibration cut, a walker population
that collapsed, or an error bar above the campaign's limit each raise
:class:`~mfal.qmc.base.QmcJobFailed` naming the file and the reason, so the job
can be rerun (typically with more blocks) instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from mfal.qmc.base import HARTREE_EV, QmcJobFailed, StrictModel
from mfal.qmc.qmca import ScalarFileError, Series, equilibration_length, read_series, \
    series_statistics, twist_average


class DmcAnalysisSettings(StrictModel):
    """When a DMC series is good enough to become a label."""

    equilibration_blocks: int | Literal["auto"] = Field(
        20, description="Blocks dropped from the start of each DMC series; 'auto' uses qmca's "
                        "bounce heuristic. 20 blocks of 20 steps at tau=0.01/Ha is a projection "
                        "time of 4/Ha, several times the usual correlation time of a solid.")
    min_blocks: int = Field(50, ge=2, description="Blocks required after the equilibration cut.")
    max_error_eV: float | None = Field(
        0.1, gt=0, description="Largest acceptable one-sigma error bar of the total energy (eV); "
                               "None accepts any.")
    population_floor: float = Field(
        0.5, gt=0, lt=1, description="DMC population collapse: some block after equilibration "
                                     "holds fewer walkers (weight) than this fraction of the "
                                     "run's median.")


def analyse_dmc_series(scalar_files: Sequence[str | Path], settings: DmcAnalysisSettings,
                       weights: Sequence[float] | None = None,
                       expected_blocks: int | None = None) -> dict:
    """Energy (eV), error (eV) and diagnostics of one DMC series, twist-averaged if several files.

    ``scalar_files`` are the series' ``scalar.dat`` files, one per twist;
    ``weights`` the twist weights; ``expected_blocks`` the blocks the input asked
    for (fewer means the run stopped early). Raises :class:`QmcJobFailed`.
    """
    if not scalar_files:
        raise QmcJobFailed(".", "no scalar.dat files given for the DMC series")
    twists = []
    for name in scalar_files:
        path = Path(name)
        if not path.is_file():
            raise QmcJobFailed(path.parent, f"missing output {path}")
        try:
            twists.append(read_series(path))
        except ScalarFileError as exc:
            raise QmcJobFailed(path.parent, str(exc)) from None
    return analyse_series(twists, settings, weights, expected_blocks)


def analyse_series(twists: Sequence[Series], settings: DmcAnalysisSettings,
                   weights: Sequence[float] | None = None,
                   expected_blocks: int | None = None) -> dict:
    """Check DMC traces already read (one per twist) and return their label.

    Each :class:`~mfal.qmc.qmca.Series` needs a ``LocalEnergy`` trace in Hartree;
    a ``BlockWeight`` trace, when present, is checked for population collapse.
    """
    for item in twists:
        _check_trace(item, expected_blocks)
        _check_population(item, settings)
    series = twists[0] if len(twists) == 1 else twist_average(twists, weights)
    job = Path(series.path).parent
    nbe = _equilibration(series, settings)
    kept = series.nblocks - nbe
    if kept < settings.min_blocks:
        raise QmcJobFailed(job, f"too few blocks after equilibration in {series.path}: "
                                f"{kept} blocks after dropping {nbe}, need {settings.min_blocks}")
    stats = series_statistics(series.data, nbe)
    energy = stats["LocalEnergy"]
    error_eV = energy.error * HARTREE_EV
    if settings.max_error_eV is not None and error_eV > settings.max_error_eV:
        raise QmcJobFailed(job, f"error bar {error_eV:.4f} eV of {series.path} is above the "
                                f"limit {settings.max_error_eV} eV; run more blocks")
    diagnostics = {
        "files": [item.path for item in twists],
        "twist_weights": None if weights is None else [float(w) for w in weights],
        "equilibration_blocks": nbe,
        "blocks_used": kept,
        "energy_Ha": energy.mean,
        "error_Ha": energy.error,
        "kappa": energy.kappa,
    }
    if "Variance" in stats:
        diagnostics["variance_Ha2"] = stats["Variance"].mean
    return {"energy_eV": energy.mean * HARTREE_EV, "error_eV": error_eV,
            "diagnostics": diagnostics}


def _check_trace(series: Series, expected_blocks: int | None) -> None:
    path = Path(series.path)
    if "LocalEnergy" not in series.data:
        raise QmcJobFailed(path.parent, f"{path} has no LocalEnergy column")
    if expected_blocks is not None and series.nblocks < expected_blocks:
        raise QmcJobFailed(path.parent, f"truncated {path}: {series.nblocks} of "
                                        f"{expected_blocks} blocks written")
    for name, trace in series.data.items():
        bad = np.flatnonzero(~np.isfinite(trace))
        if bad.size:
            raise QmcJobFailed(path.parent, f"NaN or inf in {name} of {path} at blocks "
                                            f"{bad[:10].tolist()}")


def _equilibration(series: Series, settings: DmcAnalysisSettings) -> int:
    if settings.equilibration_blocks == "auto":
        return equilibration_length(series.data["LocalEnergy"])
    return settings.equilibration_blocks


def _check_population(series: Series, settings: DmcAnalysisSettings) -> None:
    """Population collapse, from the ``dmc.dat`` beside the scalar file or its BlockWeight."""
    source, population = None, None
    dmc_dat = Path(series.path.replace("scalar.dat", "dmc.dat"))
    if series.path.endswith("scalar.dat") and dmc_dat.is_file():
        try:
            walkers = read_series(dmc_dat)
        except ScalarFileError as exc:
            raise QmcJobFailed(dmc_dat.parent, str(exc)) from None
        if "NumOfWalkers" in walkers.data:
            source, population = dmc_dat, walkers.data["NumOfWalkers"]
    if population is None and "BlockWeight" in series.data:
        source, population = Path(series.path), series.data["BlockWeight"]
    if population is None:
        return
    # dmc.dat has one row per step, scalar.dat one per block: cut the same fraction.
    nbe = _equilibration(series, settings)
    start = min(len(population) - 1, int(len(population) * nbe / series.nblocks))
    reference = float(np.median(population))
    lowest = start + int(np.argmin(population[start:]))
    if reference <= 0 or population[lowest] < settings.population_floor * reference:
        raise QmcJobFailed(source.parent, f"DMC population collapse in {source}: "
                                          f"{population[lowest]:g} at row {lowest} against a "
                                          f"median of {reference:g}")
