"""Choosing a backend from a campaign's qmc: section."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from mfal.errors import ConfigError
from mfal.qmc.pyqmc_backend import PyqmcBackend, PyqmcSettings
from mfal.qmc.qmcpack import QmcpackBackend, QmcpackSettings
from mfal.qmc.registry import backend_for, parse_qmc_settings
from mfal.qmc.surrogate import SurrogateBackend, SurrogateSettings


def test_each_backend_from_its_section(tmp_path):
    qmcpack = parse_qmc_settings({"backend": "qmcpack", "pseudo_dir": "pp"}, base_dir=tmp_path)
    assert isinstance(qmcpack, QmcpackSettings) and qmcpack.pseudo_dir == tmp_path / "pp"
    backend = backend_for(qmcpack, {"qmcpack_cmd": "qmcpack_complex", "mpi_cmd": "srun"})
    assert isinstance(backend, QmcpackBackend)
    assert backend.commands.qmcpack_cmd == "qmcpack_complex" and backend.commands.mpi_cmd == "srun"
    pyqmc = parse_qmc_settings({"backend": "pyqmc", "dmc": {"timestep": 0.005}})
    assert isinstance(pyqmc, PyqmcSettings) and isinstance(backend_for(pyqmc), PyqmcBackend)
    surrogate = parse_qmc_settings({"backend": "surrogate", "model_file": "m.pt",
                                    "noise_sigma_eV": 0.02}, base_dir=tmp_path)
    assert isinstance(surrogate, SurrogateSettings) and surrogate.model_file == tmp_path / "m.pt"
    assert isinstance(backend_for(surrogate), SurrogateBackend)
    absolute = parse_qmc_settings({"backend": "surrogate", "model_file": "/abs/m.pt"}, tmp_path)
    assert absolute.model_file == Path("/abs/m.pt")


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"qmc.backend must be one of \['pyqmc', 'qmcpack', "
                                          r"'surrogate'\]; got 'casino'"):
        parse_qmc_settings({"backend": "casino"})
    with pytest.raises(ConfigError, match="got None"):
        parse_qmc_settings({"walkers": 3})
    with pytest.raises(ValidationError, match="walkers"):
        parse_qmc_settings({"backend": "pyqmc", "walkers": -1})
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_qmc_settings(["pyqmc"])


def test_label_key_leaves_out_only_machine_paths(tmp_path):
    here = parse_qmc_settings({"backend": "qmcpack", "pseudo_dir": str(tmp_path / "a")})
    there = parse_qmc_settings({"backend": "qmcpack", "pseudo_dir": str(tmp_path / "b")})
    assert here.label_key() == there.label_key()
    other = parse_qmc_settings({"backend": "qmcpack", "pseudo_dir": str(tmp_path / "a"),
                                "dmc": {"timestep": 0.005}})
    assert other.label_key() != here.label_key()
    pyqmc = parse_qmc_settings({"backend": "pyqmc"})
    assert pyqmc.label_key() == pyqmc.model_dump(mode="json")
