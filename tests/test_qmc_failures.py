"""Failure detection on hand-damaged copies of QMCPACK's reference DMC output."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from mfal.qmc.base import HARTREE_EV, QmcJobFailed
from mfal.qmc.qmcpack_analysis import DmcAnalysisSettings, analyse_dmc_series

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "qmcpack-reference"
DMC = REFERENCE / "diamond_gamma" / "dmc" / "dmc.s001.scalar.dat"
TWISTS = sorted((REFERENCE / "diamond_twist" / "vmc").glob("vmc.g00*.s000.scalar.dat"))
LENIENT = DmcAnalysisSettings(equilibration_blocks=10, min_blocks=20, max_error_eV=1.0)


@pytest.fixture
def copy(tmp_path):
    target = tmp_path / DMC.name
    shutil.copyfile(DMC, target)
    return target


def _rewrite_rows(path: Path, edit):
    """Apply ``edit(rows)`` to the data rows (lists of strings) of a scalar.dat file."""
    header, *rows = path.read_text().splitlines()
    rows = [r.split() for r in rows]
    rows = edit(rows)
    path.write_text("\n".join([header] + ["   ".join(r) for r in rows]) + "\n")


def test_intact_copy_is_a_label(copy):
    result = analyse_dmc_series([copy], LENIENT, expected_blocks=50)
    assert result["energy_eV"] == pytest.approx(-10.53167630 * HARTREE_EV, abs=1.4e-7)  # half a printed digit
    assert result["error_eV"] == pytest.approx(0.00163992 * HARTREE_EV, abs=1e-6)
    assert result["diagnostics"]["blocks_used"] == 40


def test_missing_file(tmp_path):
    with pytest.raises(QmcJobFailed, match="missing output"):
        analyse_dmc_series([tmp_path / "dmc.s001.scalar.dat"], LENIENT)


def test_truncated_mid_line(copy):
    text = copy.read_text()
    copy.write_text(text[: len(text) - 100])
    with pytest.raises(QmcJobFailed, match="truncated file"):
        analyse_dmc_series([copy], LENIENT)


def test_truncated_fewer_blocks_than_requested(copy):
    _rewrite_rows(copy, lambda rows: rows[:30])
    with pytest.raises(QmcJobFailed, match="30 of 50 blocks"):
        analyse_dmc_series([copy], LENIENT, expected_blocks=50)


def test_header_only(copy):
    copy.write_text(copy.read_text().splitlines()[0] + "\n")
    with pytest.raises(QmcJobFailed, match="no data rows"):
        analyse_dmc_series([copy], LENIENT)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_energy(copy, bad):
    def poison(rows):
        rows[25][1] = bad
        return rows

    _rewrite_rows(copy, poison)
    with pytest.raises(QmcJobFailed, match=r"NaN or inf in LocalEnergy .* blocks \[25\]"):
        analyse_dmc_series([copy], LENIENT)


def test_too_few_blocks_after_equilibration(copy):
    settings = LENIENT.model_copy(update={"equilibration_blocks": 40})
    with pytest.raises(QmcJobFailed, match="10 blocks after dropping 40, need 20"):
        analyse_dmc_series([copy], settings)


def test_error_bar_above_limit(copy):
    settings = LENIENT.model_copy(update={"max_error_eV": 0.01})
    with pytest.raises(QmcJobFailed, match=r"error bar 0\.04\d+ eV .* above the limit 0\.01 eV"):
        analyse_dmc_series([copy], settings)


def test_population_collapse_from_block_weight(copy):
    def collapse(rows):
        for row in rows[35:]:
            row[10] = f"{float(row[10]) * 0.2:.10e}"
        return rows

    _rewrite_rows(copy, collapse)
    with pytest.raises(QmcJobFailed, match="population collapse in .*scalar.dat"):
        analyse_dmc_series([copy], LENIENT)


def _write_dmc_dat(scalar: Path, walkers: np.ndarray) -> Path:
    """A dmc.dat beside ``scalar`` with the reference energies and the given walker counts."""
    energies = np.loadtxt(scalar)[:, 1]
    steps = np.repeat(energies, 4)[: len(walkers)]
    path = scalar.with_name(scalar.name.replace("scalar.dat", "dmc.dat"))
    lines = ["#   index    LocalEnergy         Variance            Weight              "
             "NumOfWalkers        TrialEnergy"]
    for i, (e, w) in enumerate(zip(steps, walkers)):
        lines.append(f"{i:10d}   {e:.10e}   {0.4:.10e}   {w:.10e}   {w:.10e}   {e:.10e}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_population_collapse_from_dmc_dat(copy):
    walkers = np.full(200, 512.0)
    _write_dmc_dat(copy, walkers)
    analyse_dmc_series([copy], LENIENT)
    walkers[150:] = 40.0
    _write_dmc_dat(copy, walkers)
    with pytest.raises(QmcJobFailed, match=r"population collapse in .*dmc\.dat: 40 at row 150"):
        analyse_dmc_series([copy], LENIENT)


def test_twist_average_uses_all_twists_and_flags_a_damaged_one(tmp_path):
    copies = []
    for path in TWISTS:
        copies.append(tmp_path / path.name)
        shutil.copyfile(path, copies[-1])
    settings = DmcAnalysisSettings(equilibration_blocks=5, min_blocks=20, max_error_eV=1.0)
    result = analyse_dmc_series(copies, settings, weights=[1, 3, 3, 1])
    assert result["energy_eV"] == pytest.approx(-11.44375840 * HARTREE_EV, abs=1e-6)
    _rewrite_rows(copies[2], lambda rows: rows[:60])
    with pytest.raises(QmcJobFailed, match="vmc.g002.s000.scalar.dat: 60 of 100 blocks"):
        analyse_dmc_series(copies, settings, weights=[1, 3, 3, 1], expected_blocks=100)
