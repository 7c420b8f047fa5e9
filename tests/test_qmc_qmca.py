"""qmca equivalence on QMCPACK's own reference outputs (../shared/qmcpack-reference)."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mfal.qmc import qmca
from mfal.qmc.cli import app

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "qmcpack-reference"
GAMMA = REFERENCE / "diamond_gamma"
TWISTS = sorted((REFERENCE / "diamond_twist" / "vmc").glob("vmc.g00*.s000.scalar.dat"))
DMC = sorted((GAMMA / "dmc").glob("dmc.s00*.scalar.dat"))


def _readme_rows():
    """(files, qmca options, quantity, mean, error) rows of the reference README table."""
    rows = []
    for line in (REFERENCE / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("diamond") or (
                len(cells) == 5 and cells[0].startswith("same")):
            rows.append(cells)
    return rows


def _case(files: str, options: str):
    """Translate a README row's files/options into qmca() arguments."""
    eq = int(options.split("-e")[1].split()[0])
    if "joined" in files:
        return dict(paths=DMC, equilibration=eq, join=(1, 3)), ("dmc", 1)
    if "twist-averaged" in files:
        return dict(paths=TWISTS, equilibration=eq, average=True), ("avg", 0)
    if files.startswith("same"):
        return dict(paths=TWISTS, equilibration=eq, average=True, weights=[1, 3, 3, 1]), ("avg", 0)
    path = REFERENCE / files
    series = int(path.name.split(".s")[1][:3])
    return dict(paths=[path], equilibration=eq), (None, series)


README_ROWS = _readme_rows()


def test_readme_table_is_read():
    assert len(README_ROWS) == 11


@pytest.mark.parametrize("files,options,quantity,mean,error", README_ROWS)
def test_reference_numbers(files, options, quantity, mean, error):
    kwargs, (prefix, series) = _case(files, options)
    results = qmca.qmca(**kwargs)
    (result,) = [r for r in results if r.series == series]
    if prefix is not None:
        assert Path(result.prefix).name == prefix
    stats = result.stats[quantity]
    assert f"{stats.mean:.8f}" == mean
    assert f"{stats.error:.8f}" == error


@pytest.mark.parametrize("files,options,quantity,mean,error", README_ROWS)
def test_cli_prints_reference_numbers(files, options, quantity, mean, error):
    kwargs, (_, series) = _case(files, options)
    args = ["analyse", "-e", str(kwargs["equilibration"]), "-q", quantity, "--fp", "16.8f"]
    if kwargs.get("average"):
        args.append("-a")
    if kwargs.get("weights"):
        args += ["-w", " ".join(str(w) for w in kwargs["weights"])]
    if kwargs.get("join"):
        args += ["-j", "1 3"]
    args += [str(p) for p in kwargs["paths"]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if f"series {series}  " in l)
    assert line.split("=")[0].split()[-1] == quantity
    assert line.split("=")[1].split() == [mean, "+/-", error]


def test_energy_variance_table_format():
    result = CliRunner().invoke(app, ["analyse", "-e", "5 10 15 20", "-q", "ev", "--fp", "16.8f",
                                      *map(str, DMC)])
    assert result.exit_code == 0, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert lines[0].split() == ["LocalEnergy", "Variance", "ratio"]
    assert lines[1].split()[-7:] == ["-10.48910618", "+/-", "0.00714379", "0.45789123", "+/-",
                                     "0.04510618", "0.0437"]
    assert len(lines) == 5


def test_all_quantities_listing_ends_with_corrected_energy():
    result = CliRunner().invoke(app, ["analyse", "-e", "5", str(GAMMA / "vmc/vmc.s000.scalar.dat")])
    assert result.exit_code == 0, result.output
    lines = [l.strip() for l in result.output.splitlines() if l.strip()]
    assert lines[1].startswith("LocalEnergy")
    assert set(lines[-2]) == {"-"}
    assert lines[-1].startswith("CorrectedEnergy")
    assert lines[-1].split()[2:] == ["-10.1963", "+/-", "0.0047"]


def test_simstats_uncorrelated_and_correlated():
    rng = np.random.default_rng(3)
    white = rng.normal(size=4000)
    s = qmca.simstats(white)
    assert s.var == pytest.approx(white.var())
    assert s.kappa < 1.2
    assert s.error == pytest.approx(np.sqrt(s.var * s.kappa / len(white)))
    correlated = np.convolve(white, np.ones(20) / 20, mode="valid")
    assert qmca.simstats(correlated).kappa > 10


def test_constant_trace_has_kappa_one_and_zero_error():
    s = qmca.simstats(np.full(10, -3.0))
    assert (s.mean, s.error, s.kappa) == (-3.0, 0.0, 1.0)


def test_auto_equilibration_cuts_an_initial_transient():
    rng = np.random.default_rng(0)
    trace = np.concatenate([np.linspace(5, 0, 30), rng.normal(size=300)])
    nbe = qmca.equilibration_length(trace)
    assert 30 <= nbe < len(trace) // 2
    assert qmca.equilibration_length(trace[30:] * 0 + trace[40]) == 0


def test_bad_options_are_rejected():
    with pytest.raises(qmca.QmcaError, match="not less than the number of blocks"):
        qmca.qmca([GAMMA / "dmc/dmc.s000.scalar.dat"], equilibration=10)
    with pytest.raises(qmca.QmcaError, match="one weight per file prefix"):
        qmca.qmca(TWISTS, equilibration=5, average=True, weights=[1, 2])
    with pytest.raises(qmca.QmcaError, match="not a quantity"):
        qmca.parse_quantities("zz")
    with pytest.raises(qmca.QmcaError, match="no equilibration length given for series 2"):
        qmca.qmca(DMC, equilibration=[5, 10])
    result = CliRunner().invoke(app, ["analyse", "-j", "1", *map(str, DMC)])
    assert result.exit_code != 0
