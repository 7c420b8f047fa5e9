"""Campaign configuration: one YAML file per campaign, validated before anything runs.

A config is checked completely (types, ranges, files that must exist, the
pseudopotentials a QMCPACK campaign needs) before a single firework reaches the
LaunchPad. Every error names the key, the value and what is allowed. Relative
paths are taken relative to the config file, then stored absolute.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mfal.errors import ConfigError
from mfal.potentials.refit_settings import RefitSettings
from mfal.qmc.registry import QmcSettings
from mfal.select import STRATEGIES
from mfal.yamlfile import read_yaml_mapping

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
"""Shipped datasets and base committees (``data/<system>/``)."""


class Strict(BaseModel):
    """Unknown keys are errors, and so are inf and NaN: no setting of a campaign means them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# -- system ------------------------------------------------------------------
class H3System(Strict):
    """Collinear H + H2 -> H2 + H."""

    kind: Literal["h3"]
    far_distance: float = Field(3.5, gt=1.5, le=20.0, description="Distance (Å) of the free H from H2 at the endpoints.")


class Mos2System(Strict):
    """In-plane S-vacancy hop in a 2H MoS2 monolayer supercell."""

    kind: Literal["mos2"]
    size: tuple[Annotated[int, Field(ge=2, le=12)], Annotated[int, Field(ge=2, le=12)]] = Field(
        (3, 3), description="Supercell n x m (at most 12 x 12, 432 atoms).")
    variant: Literal["single", "divacancy"] = "single"
    vacuum: float = Field(15.0, ge=10.0, description="Vacuum gap (Å).")


class FileSystem(Strict):
    """A user's own reaction: initial and final structures in any format ASE reads."""

    kind: Literal["files"]
    initial: Path
    final: Path

    @field_validator("initial", "final")
    @classmethod
    def _exists(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError(f"structure file {path} does not exist")
        return path


SystemSection = Annotated[Union[H3System, Mos2System, FileSystem], Field(discriminator="kind")]


# -- committee -----------------------------------------------------------------
class CommitteeSection(Strict):
    """The DFT-trained base committee: a shipped one by name, or model files."""

    shipped: str | None = Field(None, description="Name of a committee under data/, e.g. 'h3'.")
    files: list[Path] = Field(default_factory=list, description="One mfal committee file, or several "
                                                                "mace_run_train .model files (one per member).")
    anchors: Path | None = Field(None, description="Structures (any ASE format) whose base-model forces the refit "
                                                   "keeps: the DFT training set. Default for a shipped committee: "
                                                   "its dataset.")
    max_anchors: int = Field(100, ge=0, description="At most this many of them (a seeded random subset).")
    dtype: Literal["float32", "float64"] = "float64"
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'...")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.shipped is None) == (not self.files):
            raise ValueError("give exactly one of 'shipped' (a name) or 'files' (model files)")
        for path in [*self.files, *([self.anchors] if self.anchors else [])]:
            if not path.is_file():
                raise ValueError(f"model file {path} does not exist" if path != self.anchors
                                 else f"anchor structure file {path} does not exist")
        return self


def shipped_committee_path(name: str) -> Path:
    """The committee file shipped under ``name``; an error lists the shipped ones if it is missing."""
    path = REPO_DATA / name / "committee.pt"
    if not path.is_file():
        known = sorted(p.parent.name for p in REPO_DATA.glob("*/committee.pt"))
        raise ConfigError(f"key 'committee.shipped' = {name!r}: no such shipped committee; "
                          f"shipped: {', '.join(known) or 'none'}")
    return path


def shipped_dataset_path(name: str) -> Path:
    """The DFT dataset a shipped committee was trained on."""
    return REPO_DATA / name / f"{name}_pbe.extxyz"


# -- NEB, acquisition, convergence, FireWorks ----------------------------------------
class NebSection(Strict):
    """Climbing-image NEB on the committee mean."""

    n_images: int = Field(7, ge=1, le=64, description="Moving images between the endpoints.")
    fmax: float = Field(0.05, gt=0, description="Force convergence (eV/Å) of the climbing-image stage.")
    max_steps: int = Field(500, ge=1, description="Optimizer steps of the band (and of each endpoint relaxation).")
    relax_endpoints: bool = Field(True, description="Relax both endpoints on the committee mean first.")
    endpoint_fmax: float = Field(0.01, gt=0, description="Force convergence (eV/Å) of the endpoint relaxation.")
    optimizer: Literal["FIRE", "BFGS"] = "FIRE"
    spring: float = Field(0.1, gt=0, description="Spring constant (eV/Å^2).")


class AcquisitionSection(Strict):
    """Which images get a QMC label each cycle."""

    strategy: str = Field("barrier_variance", description=f"One of {', '.join(STRATEGIES)}.")
    batch_size: int = Field(3, ge=1, le=100, description="Labels per cycle (k).")
    min_distance: float = Field(0.0, ge=0, description="Least RMS distance (Å) between picks (spread strategy).")
    prior_floor: float = Field(
        0.05, gt=0, description="Error (eV) of the low-fidelity energies that the committee spread cannot see: "
        "a DFT-trained committee agrees with itself, not with QMC, and relative DFT energies are rarely "
        "better than 0.05 eV.")
    expected_error: float = Field(0.01, gt=0, description="Expected QMC error bar (eV) for planning.")

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; allowed: {', '.join(STRATEGIES)}")
        return value


class ConvergenceSection(Strict):
    """When to stop: barrier steady and committee confident, or a budget spent."""

    tol_energy: float = Field(0.02, gt=0, description="Barrier change (eV) below which a cycle counts as steady.")
    n_consecutive: int = Field(2, ge=1, description="Steady cycles in a row needed.")
    tol_spread: float = Field(0.05, gt=0, description="Committee barrier spread (eV) needed.")
    max_cycles: int = Field(8, ge=1, description="Stop after this many refit cycles.")
    max_labels: int = Field(15, ge=1, description="Stop before exceeding this many QMC labels.")


class FireworksSection(Strict):
    """FireWorks categories: QMC fireworks go to QMC nodes, the rest to ML nodes."""

    qmc_category: str | None = Field("qmc", description="Category of QMC label fireworks (None: any worker).")
    ml_category: str | None = Field(None, description="Category of NEB/selection/refit fireworks (None: any worker).")
    qmc_work_dir: Path | None = Field(
        None, description="Shared directory for QMC job folders (default $MFAL_HOME/qmc_jobs); a finished job "
        "found there is analysed, never run again.")


class CampaignConfig(Strict):
    """One active-learning campaign."""

    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(0, ge=0)
    system: SystemSection
    committee: CommitteeSection
    neb: NebSection = Field(default_factory=NebSection)
    acquisition: AcquisitionSection = Field(default_factory=AcquisitionSection)
    qmc: QmcSettings
    refit: RefitSettings = Field(default_factory=RefitSettings)
    convergence: ConvergenceSection = Field(default_factory=ConvergenceSection)
    fireworks: FireworksSection = Field(default_factory=FireworksSection)

    def to_document(self) -> dict:
        """A JSON-able dict (absolute paths as strings) for specs and the store."""
        return self.model_dump(mode="json")


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign YAML file; relative paths are relative to the file."""
    path = Path(path)
    return config_from_dict(read_config_document(path), base_dir=path.resolve().parent, source=str(path))


def read_config_document(path: Path) -> dict:
    """The config file's mapping as written (not yet validated)."""
    return read_yaml_mapping(path, "campaign config")


def config_from_dict(raw: dict, base_dir: Path | None = None, source: str = "campaign config") -> CampaignConfig:
    """Validate a parsed config; ``~`` and ``$VARS`` in paths are expanded, relative paths
    taken from ``base_dir`` (default: the working directory)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of sections, not {type(raw).__name__}")
    try:
        return CampaignConfig.model_validate(_absolute_paths(raw, base_dir or Path.cwd()))
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"] if not _is_union_tag(part))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"key '{key}' is missing"
    if error["type"] == "extra_forbidden":
        return f"key '{key}' is not allowed here"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    return f"key '{key}' = {shown[:80]}: {message}"


def _is_union_tag(part) -> bool:
    return isinstance(part, str) and part in {"h3", "mos2", "files", "qmcpack", "pyqmc", "surrogate"}


PATH_KEYS = {("system", "initial"), ("system", "final"), ("committee", "files"), ("committee", "anchors"),
             ("qmc", "pseudo_dir"),
             ("qmc", "model_file"), ("fireworks", "qmc_work_dir")}


def _absolute_paths(raw: dict, base: Path) -> dict:
    """Make the path-valued keys absolute, relative to ``base``."""
    out = {key: (dict(value) if isinstance(value, dict) else value) for key, value in raw.items()}
    for section, key in PATH_KEYS:
        block = out.get(section)
        if not isinstance(block, dict) or block.get(key) in (None, ""):
            continue
        value = block[key]
        if isinstance(value, list):
            block[key] = [_absolute(item, base) for item in value]
        else:
            block[key] = _absolute(value, base)
    return out


def _absolute(value, base: Path):
    if not isinstance(value, (str, Path)):
        return value
    path = Path(os.path.expandvars(str(value))).expanduser()
    return str(path if path.is_absolute() else base / path)


UNSET_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def check_paths_expanded(config: CampaignConfig) -> None:
    """Raise a ConfigError naming any environment variable a path still holds unexpanded.

    ``os.path.expandvars`` leaves an unset ``$NAME`` in place, so the path would
    only fail later as an unreadable file. The check runs where a campaign is
    registered, not where a config is parsed: a workflow file is written on a
    machine where the workers' variables need not be set.
    """
    document = config.to_document()
    for section, key in sorted(PATH_KEYS):
        value = (document.get(section) or {}).get(key)
        for path in value if isinstance(value, list) else [value]:
            if not isinstance(path, str):
                continue
            unset = [a or b for a, b in UNSET_VARIABLE.findall(path) if (a or b) not in os.environ]
            if unset:
                raise ConfigError(f"{section}.{key} = {path!r}: environment variable {', '.join(unset)} is not set "
                                  "where the campaign is registered (by 'mfal campaign add', or by the worker that runs "
                                  "a workflow file's first firework); export it there or write the path out")
