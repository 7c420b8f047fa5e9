"""QMCPACK decks for a 3x3 MoS2 monolayer with one S vacancy, the run script, and pw.x itself."""

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from ase.units import Bohr
from lxml import etree
from pydantic import ValidationError

from mfal.qmc.base import HARTREE_EV, QmcJobFailed
from mfal.qmc.qmcpack import QmcpackBackend, QmcpackSettings, WorkerCommands
from mfal.qmc.qmcpack_decks import DeckError, upf_valence
from mfal.systems import mos2_monolayer, mos2_vacancy_endpoints

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PSEUDO = SHARED / "pseudopotentials"
REFERENCE_DMC = SHARED / "qmcpack-reference" / "diamond_gamma" / "dmc" / "dmc.s001.scalar.dat"


def _settings(**overrides) -> QmcpackSettings:
    config = {"backend": "qmcpack", "pseudo_dir": str(PSEUDO),
              "pseudopotentials": {"Mo": "Mo.ccECP.AREP"}}
    config.update(overrides)
    return QmcpackSettings.model_validate(config)


@pytest.fixture(scope="module")
def vacancy_cell():
    atoms = mos2_vacancy_endpoints((3, 3))[0]
    assert atoms.get_chemical_formula() == "Mo9S17"
    return atoms


@pytest.fixture(scope="module")
def job(vacancy_cell, tmp_path_factory):
    return QmcpackBackend(_settings()).prepare(vacancy_cell, tmp_path_factory.mktemp("job"))


def _pw_block(text: str, card: str, rows: int) -> tuple[list[str], np.ndarray]:
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(card)) + 1
    parts = [l.split() for l in lines[start:start + rows]]
    labels = [p[0] for p in parts] if len(parts[0]) == 4 else []
    values = np.array([[float(v) for v in p[-3:]] for p in parts])
    return labels, values


def _xml_array(element) -> np.ndarray:
    return np.array(element.text.split(), dtype=float).reshape(-1, 3)


def test_valence_charges_from_upf():
    assert upf_valence(PSEUDO / "Mo.ccECP.AREP.upf") == 14
    assert upf_valence(PSEUDO / "S.ccECP.upf") == 6


def test_job_files(job):
    names = sorted(p.name for p in job.iterdir())
    assert names == ["mfal_job.json", "nscf.in", "p2q.in"] + [
        f"qmc.g00{i}.twistnum_{i}.in.xml" for i in range(4)] + ["run.sh", "scf.in"]
    record = json.loads((job / "mfal_job.json").read_text())
    assert record["electrons"] == {"up": 114, "down": 114}
    assert record["series"] == {"optimisation": list(range(8)), "vmc": 8, "dmc": [9]}


def test_xml_counts_lattice_positions_and_pseudopotentials(job, vacancy_cell):
    scf = (job / "scf.in").read_text()
    _, lattice = _pw_block(scf, "CELL_PARAMETERS bohr", 3)
    symbols, positions = _pw_block(scf, "ATOMIC_POSITIONS bohr", len(vacancy_cell))
    assert symbols == vacancy_cell.get_chemical_symbols()
    np.testing.assert_allclose(lattice, np.asarray(vacancy_cell.cell) / Bohr, atol=1e-10)
    np.testing.assert_allclose(positions, vacancy_cell.positions / Bohr, atol=1e-10)
    for twist in range(4):
        root = etree.parse(str(job / f"qmc.g00{twist}.twistnum_{twist}.in.xml")).getroot()
        assert root.find("project").get("id") == f"qmc.g00{twist}"
        cell = root.find("qmcsystem/simulationcell")
        params = {p.get("name"): p for p in cell.findall("parameter")}
        assert params["lattice"].get("units") == "bohr"
        assert np.abs(_xml_array(params["lattice"]) - lattice).max() <= 1e-10
        assert params["bconds"].text.split() == ["p", "p", "n"]
        assert params["LR_handler"].text.strip() == "ewald_quasi2d"
        electrons = root.find("qmcsystem/particleset[@name='e']")
        assert [(g.get("name"), int(g.get("size"))) for g in electrons] == [("u", 114), ("d", 114)]
        ions = root.findall("qmcsystem/particleset[@name='ion0']/group")
        assert [(g.get("name"), int(g.get("size"))) for g in ions] == [("Mo", 9), ("S", 17)]
        for group, valence in zip(ions, (14, 6)):
            charge = group.find("parameter[@name='charge']").text
            assert int(charge) == valence
            mine = [i for i, s in enumerate(symbols) if s == group.get("name")]
            xml_positions = _xml_array(group.find("attrib[@name='position']"))
            assert np.abs(xml_positions - positions[mine]).max() <= 1e-10
        spos = root.find("qmcsystem/wavefunction/sposet_collection")
        assert spos.get("href") == "pwscf_output/pwscf.pwscf.h5"
        assert spos.get("twistnum") == str(twist)
        assert spos.find("sposet").get("size") == "114"
        dets = root.findall("qmcsystem/wavefunction/determinantset/slaterdeterminant/determinant")
        assert [d.get("size") for d in dets] == ["114", "114"]
        jastrows = [j.get("name") for j in root.findall("qmcsystem/wavefunction/jastrow")]
        assert jastrows == ["J1", "J2"]
        hrefs = {p.get("elementType"): Path(p.get("href"))
                 for p in root.findall("qmcsystem/hamiltonian/pairpot[@type='pseudo']/pseudo")}
        assert hrefs == {"Mo": PSEUDO.resolve() / "Mo.ccECP.AREP.xml",
                         "S": PSEUDO.resolve() / "S.ccECP.xml"}
        assert all(h.is_file() for h in hrefs.values())
        methods = [q.get("method") for q in root.iter("qmc")]
        assert methods == ["linear", "vmc", "dmc"]
        dmc = root.find("qmc[@method='dmc']")
        assert dmc.find("parameter[@name='nonlocalmoves']").text.strip() == "v3"


def test_nscf_on_the_twist_grid_and_pw2qmcpack(job):
    nscf = (job / "nscf.in").read_text()
    assert re.search(r"calculation\s*=\s*'nscf'", nscf)
    assert re.search(r"nosym\s*=\s*\.true\.", nscf)
    assert re.search(r"wf_collect\s*=\s*\.true\.", nscf)
    assert "gamma" not in nscf.lower()
    assert nscf.split("K_POINTS crystal")[1].split()[0] == "4"
    lines = nscf.split("K_POINTS crystal")[1].strip().splitlines()[1:]
    kpoints = np.array([[float(v) for v in l.split()[:3]] for l in lines])
    assert sorted(map(tuple, kpoints)) == [(0, 0, 0), (0, 0.5, 0), (0.5, 0, 0), (0.5, 0.5, 0)]
    p2q = (job / "p2q.in").read_text()
    assert "&inputpp" in p2q and "write_psir  = .false." in p2q and "prefix      = 'pwscf'" in p2q
    script = (job / "run.sh").read_text()
    for variable in ("MFAL_PW_CMD", "MFAL_PW2QMCPACK_CMD", "MFAL_QMCPACK_CMD", "MFAL_MPI_CMD"):
        assert variable in script


def test_timestep_series_keeps_projection_time_per_block(vacancy_cell, tmp_path):
    settings = _settings(dmc={"timestep": 0.02, "timestep_series": 3, "steps": 10})
    job = QmcpackBackend(settings).prepare(vacancy_cell, tmp_path)
    root = etree.parse(str(job / "qmc.g000.twistnum_0.in.xml")).getroot()
    runs = root.findall("qmc[@method='dmc']")
    taus = [float(r.find("parameter[@name='timestep']").text) for r in runs]
    steps = [int(r.find("parameter[@name='steps']").text) for r in runs]
    assert taus == [0.02, 0.01, 0.005]
    assert [t * s for t, s in zip(taus, steps)] == [0.2, 0.2, 0.2]


def test_bulk_cell_and_bad_inputs(tmp_path):
    bulk = mos2_monolayer((1, 1))
    bulk.pbc = True
    job = QmcpackBackend(_settings(twist_grid=(1, 1, 1))).prepare(bulk, tmp_path / "bulk")
    root = etree.parse(str(job / "qmc.g000.twistnum_0.in.xml")).getroot()
    assert root.find(".//parameter[@name='bconds']").text.split() == ["p", "p", "p"]
    assert root.find(".//parameter[@name='LR_handler']") is None
    with pytest.raises(DeckError, match=r"no upf pseudopotential for Mo: .*Mo\.ccECP\.upf"):
        QmcpackBackend(_settings(pseudopotentials={})).prepare(bulk, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(DeckError, match="cannot have spin polarisation 1"):
        QmcpackBackend(_settings(spin_polarisation=1)).prepare(bulk, tmp_path / "y")
    molecule = bulk.copy()
    molecule.pbc = False
    with pytest.raises(DeckError, match=r"pbc \(T, T, T\) or a layer"):
        QmcpackBackend(_settings()).prepare(molecule, tmp_path / "z")


def test_settings_validation_names_the_field():
    with pytest.raises(ValidationError, match="dmc.timestep"):
        _settings(dmc={"timestep": -0.01})
    with pytest.raises(ValidationError, match="ecut"):
        _settings(dft={"ecut": 100})
    with pytest.raises(ValidationError, match="twist_shift components must be in"):
        _settings(twist_shift=(0.5, 1.5, 0))
    assert "pseudo_dir" not in _settings().label_key()


def test_worker_commands_from_fworker_env():
    commands = WorkerCommands.from_env({"qmcpack_cmd": "/opt/qmcpack/bin/qmcpack_complex",
                                        "mpi_cmd": "srun -n 64", "db_file": "x"})
    assert commands.qmcpack_cmd == "/opt/qmcpack/bin/qmcpack_complex"
    assert commands.environment()["MFAL_MPI_CMD"] == "srun -n 64"
    assert commands.pw_cmd == "pw.x"


def test_run_uses_worker_commands_and_analyse_reads_the_dmc_series(vacancy_cell, tmp_path):
    """run.sh with a recorded QMCPACK output standing in for qmcpack (not installed here)."""
    settings = _settings(twist_grid=(1, 1, 1), optimisation={"loops": 0},
                         dmc={"blocks": 50},
                         analysis={"equilibration_blocks": 10, "min_blocks": 20,
                                   "max_error_eV": 1.0})
    job = QmcpackBackend(settings).prepare(vacancy_cell, tmp_path / "job")
    (job / "pwscf_output").mkdir()
    (job / "pwscf_output" / "pwscf.pwscf.h5").write_bytes(b"")
    fake = tmp_path / "recorded_qmcpack.sh"
    fake.write_text(f"#!/bin/bash\n[ \"$LAUNCHED\" = yes ] || exit 7\n"
                    f"cp {REFERENCE_DMC} qmc.g000.s001.scalar.dat\necho \"$@\" > args.txt\n")
    fake.chmod(0o755)
    commands = WorkerCommands(qmcpack_cmd=str(fake), mpi_cmd="env LAUNCHED=yes")
    backend = QmcpackBackend(settings, commands)
    backend.run(job)
    assert (job / "args.txt").read_text().split() == ["qmc.g000.twistnum_0.in.xml"]
    result = backend.analyse(job)
    assert result.energy_eV == pytest.approx(-10.53167630 * HARTREE_EV, abs=1.4e-7)
    assert result.error_eV == pytest.approx(0.00163992 * HARTREE_EV, abs=1.4e-7)
    assert result.diagnostics["timesteps"][0]["series"] == 1
    with pytest.raises(QmcJobFailed, match="run.sh exited with status 7"):
        QmcpackBackend(settings, WorkerCommands(qmcpack_cmd=str(fake))).run(job)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pw.x") is None, reason="Quantum ESPRESSO pw.x not installed")
def test_pw_x_reads_the_scf_input(vacancy_cell, tmp_path):
    settings = _settings(dft={"ecutwfc_Ry": 20.0, "electron_maxstep": 1})
    job = QmcpackBackend(settings).prepare(vacancy_cell, tmp_path)
    proc = subprocess.run(["pw.x", "-in", "scf.in"], cwd=job, capture_output=True, text=True,
                          timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    out = proc.stdout
    assert "convergence NOT achieved after   1 iterations" in out, out[-2000:]
    assert re.search(r"number of atoms/cell\s*=\s*26\b", out)
    assert re.search(r"number of electrons\s*=\s*228\.00", out)
    for name in ("Mo.ccECP.AREP.upf", "S.ccECP.upf"):
        assert re.search(r"PseudoPot\. # \d for \w+\s+read from file:\s*\n\s*\S*" + re.escape(name),
                         out), name
    alat = float(re.search(r"lattice parameter \(alat\)\s*=\s*([\d.]+)", out).group(1))
    axes = np.array([[float(v) for v in m] for m in
                     re.findall(r"a\(\d\) = \(\s*(\S+)\s+(\S+)\s+(\S+)\s*\)", out)])
    np.testing.assert_allclose(axes * alat, np.asarray(vacancy_cell.cell) / Bohr, atol=2e-3)
    taus = np.array([[float(v) for v in m] for m in
                     re.findall(r"tau\(\s*\d+\) = \(\s*(\S+)\s+(\S+)\s+(\S+)\s*\)", out)])
    assert taus.shape == (26, 3)
    np.testing.assert_allclose(taus * alat, vacancy_cell.positions / Bohr, atol=1e-4 * alat)
    _check_nscf_reads_the_twists(job, vacancy_cell, alat * Bohr)


def _check_nscf_reads_the_twists(job, atoms, alat_angstrom):
    """Start the NSCF run on the SCF's (unconverged) density, stop it once its setup is printed.

    The diagonalisation itself takes minutes; what is checked is that pw.x accepts
    the input and lists the four twists of the deck as its k-points.
    """
    with open(job / "nscf.out", "w") as out:
        proc = subprocess.Popen(["pw.x", "-in", "nscf.in"], cwd=job, stdout=out,
                                stderr=subprocess.STDOUT,
                                env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                if "Band Structure Calculation" in (job / "nscf.out").read_text():
                    break
                time.sleep(1)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = (job / "nscf.out").read_text()
    assert "Band Structure Calculation" in text, text[-2000:]
    assert re.search(r"number of k points=\s+4\b", text)
    block = text.split("cart. coord. in units 2pi/alat")[1]
    listed = np.array([[float(v) for v in m] for m in re.findall(
        r"k\(\s*\d+\) = \(\s*(\S+)\s+(\S+)\s+(\S+)\),", block)][:4])
    twists = np.array([[float(v) for v in line.split()[:3]] for line in
                       (job / "nscf.in").read_text().split("K_POINTS crystal")[1]
                       .strip().splitlines()[1:]])
    expected = twists @ (np.asarray(atoms.cell.reciprocal()) * alat_angstrom)
    np.testing.assert_allclose(listed, expected, atol=2e-6)


def test_cli_write_from_a_config_file(vacancy_cell, tmp_path):
    from ase.io import write
    from typer.testing import CliRunner

    from mfal.qmc.cli import app

    structure = tmp_path / "vacancy.extxyz"
    write(structure, vacancy_cell)
    config = tmp_path / "campaign.yaml"
    config.write_text(f"qmc:\n  backend: qmcpack\n  pseudo_dir: {PSEUDO}\n"
                      "  pseudopotentials: {Mo: Mo.ccECP.AREP}\n  dmc: {timestep: 0.005}\n")
    result = CliRunner().invoke(app, ["write", str(config), "--structure", str(structure),
                                      "--out", str(tmp_path / "deck")])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "deck" / "run.sh") in result.output.split()
    xml = (tmp_path / "deck" / "qmc.g000.twistnum_0.in.xml").read_text()
    assert "<parameter name=\"timestep\"> 0.005 </parameter>" in xml
    config.write_text("qmc:\n  backend: qmcpack\n  pseudo_dir: nowhere\n  dmc: {tau: 1}\n")
    result = CliRunner().invoke(app, ["write", str(config), "--structure", str(structure),
                                      "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "dmc.tau" in result.output
    config.write_text("qmc:\n  backend: casino\n")
    result = CliRunner().invoke(app, ["write", str(config), "--structure", str(structure),
                                      "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "qmc.backend must be one of" in result.output


def test_analyse_applies_the_current_error_limit(vacancy_cell, tmp_path):
    settings = _settings(twist_grid=(1, 1, 1), optimisation={"loops": 0}, dmc={"blocks": 50},
                         analysis={"equilibration_blocks": 10, "min_blocks": 20,
                                   "max_error_eV": 1.0})
    job = QmcpackBackend(settings).prepare(vacancy_cell, tmp_path / "job")
    shutil.copyfile(REFERENCE_DMC, job / "qmc.g000.s001.scalar.dat")
    assert QmcpackBackend(settings).analyse(job).error_eV < 0.05
    strict = settings.model_copy(update={"analysis": settings.analysis.model_copy(
        update={"max_error_eV": 0.01})})
    with pytest.raises(QmcJobFailed, match="above the limit 0.01 eV"):
        QmcpackBackend(strict).analyse(job)
    with pytest.raises(QmcJobFailed, match="missing mfal_job.json"):
        QmcpackBackend(settings).analyse(tmp_path / "elsewhere")
