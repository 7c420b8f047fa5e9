"""Input files of a QMCPACK job: QE SCF + NSCF, pw2qmcpack, QMCPACK XML, run script.

The chain follows QMCPACK's documentation and Nexus' conventions: a PBE SCF
density, an NSCF run on the twist grid with symmetry off (pw2qmcpack needs every
twist explicitly; ``K_POINTS gamma`` is not supported by it), conversion of the
orbitals to ESHDF, then one QMCPACK input per twist (``qmc.gNNN.twistnum_N.in.xml``)
run together as an ensemble, so that ``qmc.gNNN.sSSS.scalar.dat`` is twist ``NNN``
of series ``SSS``. Each input holds a ``<loop>`` of linear-method optimisations,
one VMC and one DMC run per time step.

Lattice and positions are converted to bohr once and written with the same
digits into the QE and the QMCPACK inputs, so the two describe the same cell.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers
from ase.units import Bohr
from lxml import etree

from mfal.errors import MfalError

if TYPE_CHECKING:
    from mfal.qmc.qmcpack import QmcpackSettings

PREFIX = "pwscf"
OUTDIR = "pwscf_output"
ESHDF = f"{OUTDIR}/{PREFIX}.{PREFIX}.h5"
QMC_PREFIX = "qmc"
#: Electron masses per atomic mass unit (QMCPACK wants ion masses in electron masses).
AMU_ME = 1822.888486209
_COORD = "{:.12f}"


class DeckError(MfalError):
    """A structure or pseudopotential set cannot be turned into a QMCPACK job."""


@dataclass(frozen=True)
class Species:
    """One element of the structure with its pseudopotential files and valence charge."""

    symbol: str
    upf: Path
    xml: Path
    valence: int


def species_for(atoms: Atoms, pseudo_dir: Path, stems: dict[str, str]) -> list[Species]:
    """Pseudopotential files (``STEM.upf`` for QE, ``STEM.xml`` for QMCPACK) of each element.

    ``stems`` maps an element to its file stem; elements not in it use ``SYMBOL.ccECP``.
    """
    pseudo_dir = Path(pseudo_dir).expanduser().resolve()
    if not pseudo_dir.is_dir():
        raise DeckError(f"pseudo_dir {pseudo_dir} is not a directory")
    result = []
    for symbol in dict.fromkeys(atoms.get_chemical_symbols()):
        stem = stems.get(symbol, f"{symbol}.ccECP")
        files = {ext: pseudo_dir / f"{stem}.{ext}" for ext in ("upf", "xml")}
        for ext, path in files.items():
            if not path.is_file():
                present = sorted(p.name for p in pseudo_dir.iterdir())
                raise DeckError(f"no {ext} pseudopotential for {symbol}: {path} does not exist "
                                f"(pseudo_dir holds {present}); set pseudopotentials.{symbol} "
                                "to the file stem")
        result.append(Species(symbol, files["upf"], files["xml"], upf_valence(files["upf"])))
    return result


def upf_valence(path: Path) -> int:
    """Valence charge of a UPF pseudopotential (v1 ``Z valence`` line or v2 ``z_valence``)."""
    text = Path(path).read_text(errors="replace")
    match = re.search(r'z_valence\s*=\s*"\s*([-+.\deE]+)\s*"', text, re.IGNORECASE) \
        or re.search(r"^\s*([-+.\deE]+)\s+Z valence", text, re.MULTILINE)
    if match is None:
        raise DeckError(f"{path}: no valence charge (z_valence) in the UPF header")
    value = float(match.group(1))
    if abs(value - round(value)) > 1e-8:
        raise DeckError(f"{path}: non-integer valence charge {value}")
    return int(round(value))


def boundary_conditions(atoms: Atoms) -> str:
    """QMCPACK ``bconds``: ``p p p`` for a bulk cell, ``p p n`` for a layer periodic in x, y."""
    pbc = tuple(bool(p) for p in atoms.pbc)
    if pbc == (True, True, True):
        return "p p p"
    if pbc == (True, True, False):
        return "p p n"
    raise DeckError(f"QMCPACK decks need pbc (T, T, T) or a layer (T, T, F) with its normal "
                    f"along z; got pbc={pbc}")


def electron_counts(atoms: Atoms, species: Sequence[Species], polarisation: int) -> tuple[int, int]:
    """(up, down) electrons from the valence charges; ``polarisation`` is up minus down."""
    valence = {s.symbol: s.valence for s in species}
    total = sum(valence[sym] for sym in atoms.get_chemical_symbols())
    if (total - polarisation) % 2 or abs(polarisation) > total:
        raise DeckError(f"{total} valence electrons cannot have spin polarisation {polarisation} "
                        "(up minus down must have the parity of the electron count)")
    down = (total - polarisation) // 2
    return total - down, down


def twist_grid(grid: Sequence[int], shift: Sequence[float]) -> np.ndarray:
    """Twists of a Monkhorst-Pack grid in crystal coordinates of the supercell, in (-1/2, 1/2]."""
    axes = [(np.arange(n) + s) / n for n, s in zip(grid, shift)]
    points = np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).T
    points = points - np.floor(points + 0.5 - 1e-12)
    points[np.abs(points) < 1e-14] = 0.0
    return points


def lattice_bohr(atoms: Atoms) -> np.ndarray:
    return np.asarray(atoms.cell) / Bohr


def positions_bohr(atoms: Atoms) -> np.ndarray:
    return atoms.positions / Bohr


def _numbers(row) -> str:
    # Adding 0.0 after rounding turns -0.0 into 0.0, so no "-0.000000000000" is written.
    return " ".join(_COORD.format(v) for v in np.round(np.asarray(row, dtype=float), 12) + 0.0)


def _rows(array: np.ndarray, indent: str = " ") -> list[str]:
    return [indent + _numbers(row) for row in array]


def pw_input(atoms: Atoms, species: Sequence[Species], settings: QmcpackSettings,
             calculation: str, twists: np.ndarray | None = None) -> str:
    """``pw.x`` input: SCF on ``dft.scf_kgrid``, or NSCF on the twists with symmetry off."""
    dft = settings.dft
    control = {"calculation": f"'{calculation}'", "prefix": f"'{PREFIX}'",
               "outdir": f"'./{OUTDIR}'", "pseudo_dir": f"'{species[0].upf.parent}'",
               "disk_io": "'low'", "wf_collect": ".true."}
    system = {"ibrav": "0", "nat": str(len(atoms)), "ntyp": str(len(species)),
              "ecutwfc": repr(float(dft.ecutwfc_Ry)), "input_dft": f"'{dft.functional}'",
              "nspin": "1" if settings.spin_polarisation == 0 else "2"}
    if settings.spin_polarisation:
        system["tot_magnetization"] = str(settings.spin_polarisation)
    if dft.occupations == "smearing":
        system.update(occupations="'smearing'", smearing="'gaussian'",
                      degauss=repr(float(dft.degauss_Ry)))
    else:
        system["occupations"] = "'fixed'"
    if calculation == "nscf":
        system.update(nosym=".true.", noinv=".true.")
    electrons = {"conv_thr": f"{dft.conv_thr_Ry:.3e}", "mixing_beta": repr(float(dft.mixing_beta)),
                 "electron_maxstep": str(dft.electron_maxstep)}
    lines = []
    for name, values in (("CONTROL", control), ("SYSTEM", system), ("ELECTRONS", electrons)):
        lines.append(f"&{name}")
        lines += [f"   {key:<17}= {value}" for key, value in values.items()]
        lines.append("/")
    lines.append("ATOMIC_SPECIES")
    for s in species:
        lines.append(f"   {s.symbol:<3} {atomic_masses[atomic_numbers[s.symbol]]:.5f} {s.upf.name}")
    lines.append("CELL_PARAMETERS bohr")
    lines += _rows(lattice_bohr(atoms), "   ")
    lines.append("ATOMIC_POSITIONS bohr")
    for symbol, row in zip(atoms.get_chemical_symbols(), positions_bohr(atoms)):
        lines.append(f"   {symbol:<3}" + _numbers(row))
    if calculation == "scf":
        lines.append("K_POINTS automatic")
        lines.append("   " + " ".join(str(n) for n in dft.scf_kgrid) + " 0 0 0")
    else:
        lines.append("K_POINTS crystal")
        lines.append(f"   {len(twists)}")
        lines += [f"   {_numbers(k)} 1.0" for k in twists]
    return "\n".join(lines) + "\n"


def pw2qmcpack_input() -> str:
    """pw2qmcpack.x input: convert the NSCF orbitals to ESHDF (no real-space orbitals)."""
    return f"&inputpp\n   prefix      = '{PREFIX}'\n   outdir      = './{OUTDIR}'\n" \
           "   write_psir  = .false.\n/\n"


def _param(parent, name: str, value) -> etree._Element:
    element = etree.SubElement(parent, "parameter", name=name)
    element.text = f" {value} "
    return element


def _jastrow_rcut(atoms: Atoms, requested: float | None) -> float | None:
    """Cut-off radius (bohr) for a Jastrow term; for a layer half the in-plane cell width.

    In a bulk cell QMCPACK takes the Wigner-Seitz radius when no rcut is given;
    with an open direction it cannot, so the inscribed radius of the periodic
    plane is used.
    """
    if requested is not None or all(atoms.pbc):
        return requested
    a, b = lattice_bohr(atoms)[:2]
    area = np.linalg.norm(np.cross(a, b))
    return float(0.5 * min(area / np.linalg.norm(a), area / np.linalg.norm(b)) - 1e-6)


def qmcpack_input(atoms: Atoms, species: Sequence[Species], settings: QmcpackSettings,
                  twist_index: int) -> str:
    """QMCPACK XML for one twist: system, Slater-Jastrow wavefunction, hamiltonian, runs."""
    up, down = electron_counts(atoms, species, settings.spin_polarisation)
    root = etree.Element("simulation")
    project = etree.SubElement(root, "project", id=f"{QMC_PREFIX}.g{twist_index:03d}", series="0")
    etree.SubElement(project, "application", name="qmcpack", role="molecu", **{"class": "serial"},
                     version="1.0")
    _param(project, "driver_version", "batched")
    if settings.seed is not None:
        etree.SubElement(root, "random", seed=str(settings.seed + twist_index))
    system = etree.SubElement(root, "qmcsystem")
    _simulation_cell(system, atoms, settings)
    _particlesets(system, atoms, species, up, down)
    _wavefunction(system, atoms, species, settings, twist_index, up, down)
    _hamiltonian(system, species)
    _runs(root, settings)
    return etree.tostring(root, pretty_print=True, xml_declaration=True,
                          encoding="UTF-8").decode()


def _simulation_cell(system, atoms: Atoms, settings: QmcpackSettings) -> None:
    cell = etree.SubElement(system, "simulationcell")
    lattice = _param(cell, "lattice", "")
    lattice.set("units", "bohr")
    lattice.text = "\n" + "\n".join(_rows(lattice_bohr(atoms), "          ")) + "\n      "
    bconds = boundary_conditions(atoms)
    _param(cell, "bconds", bconds)
    _param(cell, "LR_dim_cutoff", settings.lr_dim_cutoff)
    if bconds == "p p n" and settings.slab_lr_handler is not None:
        _param(cell, "LR_handler", settings.slab_lr_handler)


def _particlesets(system, atoms: Atoms, species: Sequence[Species], up: int, down: int) -> None:
    electrons = etree.SubElement(system, "particleset", name="e", random="yes", randomsrc="ion0")
    for name, size in (("u", up), ("d", down)):
        group = etree.SubElement(electrons, "group", name=name, size=str(size), mass="1.0")
        _param(group, "charge", -1)
        _param(group, "mass", 1.0)
    ions = etree.SubElement(system, "particleset", name="ion0")
    symbols = np.array(atoms.get_chemical_symbols())
    positions = positions_bohr(atoms)
    for s in species:
        mask = symbols == s.symbol
        z = atomic_numbers[s.symbol]
        mass = f"{atomic_masses[z] * AMU_ME:.6f}"
        group = etree.SubElement(ions, "group", name=s.symbol, size=str(int(mask.sum())),
                                 mass=mass)
        _param(group, "charge", s.valence)
        _param(group, "valence", s.valence)
        _param(group, "atomicnumber", z)
        _param(group, "mass", mass)
        attrib = etree.SubElement(group, "attrib", name="position", datatype="posArray",
                                  condition="0")
        attrib.text = "\n" + "\n".join(_rows(positions[mask], "          ")) + "\n      "


def _wavefunction(system, atoms, species, settings: QmcpackSettings, twist_index: int,
                  up: int, down: int) -> None:
    wf = etree.SubElement(system, "wavefunction", name="psi0", target="e")
    spos = etree.SubElement(wf, "sposet_collection", type="bspline", href=ESHDF,
                            tilematrix="1 0 0 0 1 0 0 0 1", twistnum=str(twist_index),
                            source="ion0", meshfactor=repr(float(settings.meshfactor)),
                            precision=settings.spline_precision)
    if settings.spin_polarisation == 0:
        etree.SubElement(spos, "sposet", type="bspline", name="spo_u", size=str(up),
                         spindataset="0")
        down_spo = "spo_u"
    else:
        etree.SubElement(spos, "sposet", type="bspline", name="spo_u", size=str(up),
                         spindataset="0")
        etree.SubElement(spos, "sposet", type="bspline", name="spo_d", size=str(down),
                         spindataset="1")
        down_spo = "spo_d"
    slater = etree.SubElement(etree.SubElement(wf, "determinantset"), "slaterdeterminant")
    etree.SubElement(slater, "determinant", id="updet", group="u", sposet="spo_u", size=str(up))
    etree.SubElement(slater, "determinant", id="downdet", group="d", sposet=down_spo,
                     size=str(down))
    jas = settings.jastrow
    j1 = etree.SubElement(wf, "jastrow", type="One-Body", name="J1", function="bspline",
                          source="ion0", print="yes")
    j1_rcut = _jastrow_rcut(atoms, jas.j1_rcut_bohr)
    for s in species:
        corr = etree.SubElement(j1, "correlation", elementType=s.symbol, size=str(jas.j1_size),
                                cusp="0.0")
        if j1_rcut is not None:
            corr.set("rcut", f"{j1_rcut:.6f}")
        _zeros(corr, f"e{s.symbol}", jas.j1_size)
    j2 = etree.SubElement(wf, "jastrow", type="Two-Body", name="J2", function="bspline",
                          print="yes")
    j2_rcut = _jastrow_rcut(atoms, jas.j2_rcut_bohr)
    for a, b in (("u", "u"), ("u", "d")):
        corr = etree.SubElement(j2, "correlation", speciesA=a, speciesB=b, size=str(jas.j2_size))
        if j2_rcut is not None:
            corr.set("rcut", f"{j2_rcut:.6f}")
        _zeros(corr, a + b, jas.j2_size)
    if jas.j3:
        j3 = etree.SubElement(wf, "jastrow", type="eeI", name="J3", function="polynomial",
                              source="ion0", print="yes")
        for s in species:
            for a, b in (("u", "u"), ("u", "d")):
                corr = etree.SubElement(j3, "correlation", ispecies=s.symbol, especies1=a,
                                        especies2=b, isize=str(jas.j3_size),
                                        esize=str(jas.j3_size), rcut=f"{jas.j3_rcut_bohr:.6f}")
                coefficients = etree.SubElement(corr, "coefficients", id=f"{a}{b}{s.symbol}",
                                                type="Array", optimize="yes")
                coefficients.text = " "


def _zeros(parent, ident: str, size: int) -> None:
    coefficients = etree.SubElement(parent, "coefficients", id=ident, type="Array")
    coefficients.text = " " + " ".join(["0.0"] * size) + " "


def _hamiltonian(system, species: Sequence[Species]) -> None:
    ham = etree.SubElement(system, "hamiltonian", name="h0", type="generic", target="e")
    etree.SubElement(ham, "pairpot", type="coulomb", name="ElecElec", source="e", target="e")
    etree.SubElement(ham, "pairpot", type="coulomb", name="IonIon", source="ion0", target="ion0")
    pseudo = etree.SubElement(ham, "pairpot", type="pseudo", name="PseudoPot", source="ion0",
                              wavefunction="psi0", format="xml")
    for s in species:
        etree.SubElement(pseudo, "pseudo", elementType=s.symbol, href=str(s.xml))


def dmc_timesteps(settings: QmcpackSettings) -> list[float]:
    """The DMC time steps run in order: tau, tau/2, ... (``dmc.timestep_series`` of them)."""
    return [settings.dmc.timestep / 2**k for k in range(settings.dmc.timestep_series)]


def series_layout(settings: QmcpackSettings) -> dict:
    """Series numbers QMCPACK gives each run: optimisation loop, VMC, then one per DMC tau."""
    first_dmc = settings.optimisation.loops + 1
    return {"optimisation": list(range(settings.optimisation.loops)),
            "vmc": settings.optimisation.loops,
            "dmc": list(range(first_dmc, first_dmc + settings.dmc.timestep_series))}


def _runs(root, settings: QmcpackSettings) -> None:
    opt, vmc, dmc = settings.optimisation, settings.vmc, settings.dmc
    if opt.loops:
        loop = etree.SubElement(root, "loop", max=str(opt.loops))
        linear = etree.SubElement(loop, "qmc", method="linear", move="pbyp", checkpoint="-1")
        etree.SubElement(linear, "estimator", name="LocalEnergy", hdf5="no")
        for name, value in (("walkers_per_rank", opt.walkers_per_rank), ("samples", opt.samples),
                            ("warmupSteps", opt.warmup_steps), ("blocks", opt.blocks),
                            ("steps", 1), ("substeps", opt.substeps),
                            ("timestep", opt.timestep), ("usedrift", "yes"),
                            ("MinMethod", "OneShiftOnly"), ("minwalkers", opt.minwalkers)):
            _param(linear, name, value)
    run = etree.SubElement(root, "qmc", method="vmc", move="pbyp", checkpoint="-1")
    etree.SubElement(run, "estimator", name="LocalEnergy", hdf5="no")
    for name, value in (("walkers_per_rank", vmc.walkers_per_rank), ("warmupSteps", vmc.warmup_steps),
                        ("blocks", vmc.blocks), ("steps", vmc.steps), ("substeps", vmc.substeps),
                        ("timestep", vmc.timestep), ("usedrift", "no")):
        _param(run, name, value)
    for k, tau in enumerate(dmc_timesteps(settings)):
        run = etree.SubElement(root, "qmc", method="dmc", move="pbyp", checkpoint="-1")
        etree.SubElement(run, "estimator", name="LocalEnergy", hdf5="no")
        # Halving tau doubles the steps, so every block spans the same projection time.
        for name, value in (("total_walkers", dmc.total_walkers),
                            ("warmupSteps", dmc.warmup_steps * 2**k), ("blocks", dmc.blocks),
                            ("steps", dmc.steps * 2**k), ("timestep", repr(tau)),
                            ("nonlocalmoves", dmc.nonlocalmoves), ("reconfiguration", "no")):
            _param(run, name, value)


def run_script(twist_inputs: Sequence[str]) -> str:
    """Bash script running the whole chain with the worker's commands.

    The commands come from the environment (``MFAL_PW_CMD``, ``MFAL_PW2QMCPACK_CMD``,
    ``MFAL_QMCPACK_CMD``, ``MFAL_MPI_CMD``), which the runner fills from the
    worker's settings; the DFT part is skipped on a rerun once the orbitals exist.
    """
    inputs = " ".join(twist_inputs)
    return f"""#!/usr/bin/env bash
# QMCPACK job: QE SCF, NSCF on the twist grid, pw2qmcpack, then QMC on all twists.
set -euo pipefail
cd "$(dirname "$0")"
MPI_CMD="${{MFAL_MPI_CMD-}}"
PW_CMD="${{MFAL_PW_CMD:-pw.x}}"
PW2QMCPACK_CMD="${{MFAL_PW2QMCPACK_CMD:-pw2qmcpack.x}}"
QMCPACK_CMD="${{MFAL_QMCPACK_CMD:-qmcpack}}"

if [ ! -f {ESHDF} ]; then
    $MPI_CMD $PW_CMD -in scf.in > scf.out
    $MPI_CMD $PW_CMD -in nscf.in > nscf.out
    $MPI_CMD $PW2QMCPACK_CMD < p2q.in > p2q.out
fi
# One input per twist, run as one ensemble: the MPI ranks are split between them.
$MPI_CMD $QMCPACK_CMD {inputs} > qmc.out
"""
