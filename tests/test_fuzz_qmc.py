"""QMCPACK outputs cut at random bytes: a clean QMC rejection or the right result, never a partial label."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mfal.qmc.base import HARTREE_EV, QmcJobFailed
from mfal.qmc.qmcpack_analysis import DmcAnalysisSettings, analyse_dmc_series
from tests.campaign_helpers import tiny_h3_document
from tests.conftest import SHARED
from tests.test_fuzz_config import run_cli

REFERENCE = SHARED / "qmcpack-reference"
DMC_FILES = sorted((REFERENCE / "diamond_gamma" / "dmc").glob("dmc.s00*.scalar.dat"))
TWISTS = sorted((REFERENCE / "diamond_twist" / "vmc").glob("vmc.g00*.s000.scalar.dat"))
LENIENT = DmcAnalysisSettings(equilibration_blocks=5, min_blocks=5, max_error_eV=1.0)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def cut_copy(source: Path, directory: Path, fraction: float) -> tuple[Path, bytes]:
    """A copy of ``source`` in ``directory`` (same name) cut at ``fraction`` of its bytes."""
    text = source.read_bytes()
    target = directory / source.name
    target.write_bytes(text[: int(fraction * len(text))])
    return target, text


@FUZZ
@given(index=st.integers(0, len(DMC_FILES) - 1), fraction=st.floats(0, 1))
def test_cut_scalar_file_is_rejected_or_analysed_as_its_complete_rows(tmp_path, index, fraction):
    source = DMC_FILES[index]
    path, text = cut_copy(source, tmp_path, fraction)
    cut = path.read_bytes()
    try:
        result = analyse_dmc_series([path], LENIENT)
    except QmcJobFailed as exc:
        assert str(path) in str(exc)
        return
    assert cut.endswith(b"\n"), "a row without its newline may be a number cut short"
    rows = cut.count(b"\n") - 1
    energies = np.loadtxt(source, usecols=1)[LENIENT.equilibration_blocks:rows]
    assert result["diagnostics"]["blocks_used"] == len(energies)
    assert result["energy_eV"] == pytest.approx(energies.mean() * HARTREE_EV, rel=1e-12)


@FUZZ
@given(index=st.integers(0, len(DMC_FILES) - 1), fraction=st.floats(0, 1, exclude_max=True))
def test_a_run_that_stopped_early_is_never_a_label(tmp_path, index, fraction):
    source = DMC_FILES[index]
    blocks = source.read_bytes().count(b"\n") - 1
    path, _ = cut_copy(source, tmp_path, fraction)
    with pytest.raises(QmcJobFailed):
        analyse_dmc_series([path], LENIENT, expected_blocks=blocks)


@FUZZ
@given(twist=st.integers(0, len(TWISTS) - 1), fraction=st.floats(0, 1, exclude_max=True))
def test_a_cut_twist_is_never_averaged_in(tmp_path, twist, fraction):
    files = []
    for index, source in enumerate(TWISTS):
        if index == twist:
            files.append(cut_copy(source, tmp_path, fraction)[0])
        else:
            files.append(Path(shutil.copy(source, tmp_path / source.name)))
    blocks = TWISTS[0].read_bytes().count(b"\n") - 1
    with pytest.raises(QmcJobFailed):
        analyse_dmc_series(files, LENIENT, expected_blocks=blocks)


@pytest.fixture(scope="module")
def qmcpack_campaign(committee_file, tmp_path_factory, mongo_uri):
    """A QMCPACK campaign on a MoS2 vacancy cell, with its structure in the store and its job folder prepared."""
    from pymongo import MongoClient

    from mfal.config import config_from_dict
    from mfal.qmc import backend_for
    from mfal.steps import Campaign
    from mfal.store import Store
    from mfal.systems import mos2_vacancy_endpoints

    root = tmp_path_factory.mktemp("qmc_fuzz")
    document = tiny_h3_document("qmc-fuzz", committee_file, system={"kind": "mos2", "size": [3, 3]},
                                fireworks={"qmc_work_dir": str(root / "jobs")})
    document["qmc"] = {"backend": "qmcpack", "pseudo_dir": str(SHARED / "pseudopotentials"),
                       "pseudopotentials": {"Mo": "Mo.ccECP.AREP"}, "twist_grid": [1, 1, 1],
                       "optimisation": {"loops": 0}, "dmc": {"blocks": 50},
                       "analysis": {"equilibration_blocks": 10, "min_blocks": 20, "max_error_eV": 1.0}}
    config = config_from_dict(document)
    client = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    campaign = Campaign(Store(client.qmc_fuzz), config)
    structure = mos2_vacancy_endpoints((3, 3))[0]
    key = campaign.store.put_structure(structure)
    backend_for(config.qmc, {}).prepare(structure, campaign.qmc_job_dir(key))
    yield campaign, key
    client.drop_database("qmc_fuzz")
    client.close()


#: Commands that fail at once: a label that cannot be analysed must not be computed here.
FAILING_WORKER = {"pw_cmd": "false", "pw2qmcpack_cmd": "false", "qmcpack_cmd": "false"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0, 1))
def test_label_step_stores_the_whole_result_or_nothing(qmcpack_campaign, fraction):
    from mfal.qmc import backend_for
    from mfal.steps import label

    campaign, key = qmcpack_campaign
    source = DMC_FILES[1]  # dmc.s001: 50 blocks, the series the deck asks for
    job = campaign.qmc_job_dir(key)
    output = job / "qmc.g000.s001.scalar.dat"
    text = source.read_bytes()
    output.write_bytes(text[: int(fraction * len(text))])
    campaign.store.labels.delete_many({})
    try:
        label_id = label(campaign, key, FAILING_WORKER)
    except QmcJobFailed:
        assert campaign.store.labels.count_documents({}) == 0
        return
    record = campaign.store.labels.find_one()
    assert str(record["_id"]) == label_id and record["reused_job_output"] is True
    shutil.copyfile(source, output)
    intact = backend_for(campaign.config.qmc, {}).analyse(job)
    assert (record["energy"], record["error"]) == (intact.energy_eV, intact.error_eV)


@FUZZ
@given(index=st.integers(0, len(DMC_FILES) - 1), fraction=st.floats(0, 1))
@example(index=1, fraction=0.0983)  # 4 whole blocks left, fewer than -e 5: the error must still name the file
def test_mfal_qmc_analyse_on_a_cut_file_prints_a_table_or_one_error_line(tmp_path, monkeypatch, capsys, index,
                                                                         fraction):
    path, _ = cut_copy(DMC_FILES[index], tmp_path, fraction)
    status, out, err = run_cli(monkeypatch, capsys, "qmc", "analyse", str(path), "-e", "5")
    if status == 0:
        assert path.read_bytes().endswith(b"\n") and "LocalEnergy" in out and err == ""
    else:
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(path) in err, err
