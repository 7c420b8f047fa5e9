"""GPAW PBE single points for the MoS2 vacancy cell: the low-fidelity reference.

Why LCAO with the dzp basis rather than plane waves: on the 2-core machines this
project runs on, one LCAO dzp single point of the 26-atom 3x3 vacancy cell with
2 MPI ranks takes about two minutes (measured: 134 s, 14 SCF iterations of ~7 s,
GPAW 22.8), while a plane-wave calculation of the same cell (cutoff >= 400 eV,
18 Å of vacuum, ~230 valence electrons) costs several times more per SCF step; the
dataset needs hundreds of single points, so only LCAO fits. dzp is GPAW's standard
production basis and gives PBE geometries and S-vacancy energetics of MoS2 close to
plane-wave values.

The price of LCAO is grid noise in the forces: the basis functions and PAW
corrections are integrated on the real-space grid, so the labels change when the
atoms move relative to it. Moving a frame rigidly by half a grid spacing changes
its forces by 34 meV/Å RMS at h = 0.22 Å (six frames, ``make_mos2_dataset.py
--label-noise``), about 24 meV/Å of noise per label; h = 0.18 Å brought one
frame's change from 39 to 27 meV/Å at 2.2 times the cost, so the dataset keeps
0.22 Å and records its noise instead.

Spin-paired: the neutral S vacancy in MoS2 is non-magnetic. k-points: a 2x2x1
Monkhorst-Pack grid for the 3x3 supercell (6 points per primitive-cell length, a
density suited to a semiconductor with a 1.7 eV gap; the Gamma-only grid would
sample just 3 points per primitive length). Point-group symmetry is off (time
reversal only), so displaced and rattled images need no special treatment.

Energies are GPAW's, relative to its isolated-atom references; only energy
differences and forces carry meaning. Needs Debian's ``gpaw`` and ``gpaw-data``
(system Python); imported lazily so the rest of :mod:`mfal.systems` works without.
"""

import math

from ase import Atoms

from mfal.systems.errors import SystemSpecError
from mfal.systems.mos2 import MOS2_LATTICE

GPAW_SETTINGS = {
    "code": "gpaw",
    "mode": "lcao",
    "basis": "dzp",
    "xc": "PBE",
    "spinpol": False,
    "occupations": "fermi-dirac",
    "width_ev": 0.05,
    "kpt_density": 6,
    "gamma": False,
    "point_group": False,
    "h": 0.22,
    "mixer_beta": 0.1,
    "convergence_energy": 1e-4,
    "convergence_density": 1e-4,
}
"""Method settings of the MoS2 low-fidelity labels. ``kpt_density`` is the number of
k-points along each in-plane primitive-cell length; ``convergence_energy`` is in eV
per valence electron (GPAW's convention)."""


def kpoint_grid(atoms: Atoms, kpt_density: int = GPAW_SETTINGS["kpt_density"]) -> tuple[int, int, int]:
    """In-plane k-grid ``(k1, k2, 1)`` giving about ``kpt_density`` points per primitive-cell length.

    The grid follows the supercell's repeat ``n`` along each axis (``ceil(kpt_density / n)``),
    not its exact length: a strained 3x3 cell keeps the 3x3 cell's grid, so that strained and
    unstrained labels of one dataset are computed with the same Brillouin-zone sampling and
    their energies can be compared (a 1 % compression would otherwise tip 2x2x1 to 3x3x1).
    """
    if not atoms.pbc[0] or not atoms.pbc[1] or atoms.pbc[2]:
        raise SystemSpecError(f"expected a slab with pbc (True, True, False), got {tuple(atoms.pbc)}")
    repeats = (max(1, round(length / MOS2_LATTICE)) for length in atoms.cell.lengths()[:2])
    k1, k2 = (math.ceil(kpt_density / repeat) for repeat in repeats)
    return k1, k2, 1


def gpaw_calculator(atoms: Atoms, txt: str | None = None, **overrides):
    """A GPAW calculator with :data:`GPAW_SETTINGS` (plus ``overrides``) for ``atoms``' cell."""
    unknown = set(overrides) - set(GPAW_SETTINGS)
    if unknown:
        raise SystemSpecError(f"unknown GPAW setting(s) {sorted(unknown)}; allowed: {sorted(GPAW_SETTINGS)}")
    from gpaw import GPAW, FermiDirac, Mixer

    settings = {**GPAW_SETTINGS, **overrides}
    return GPAW(
        mode=settings["mode"],
        basis=settings["basis"],
        xc=settings["xc"],
        spinpol=settings["spinpol"],
        h=settings["h"],
        kpts={"size": kpoint_grid(atoms, settings["kpt_density"]), "gamma": settings["gamma"]},
        symmetry={"point_group": settings["point_group"]},
        occupations=FermiDirac(settings["width_ev"]),
        mixer=Mixer(settings["mixer_beta"], 5, 50.0),
        convergence={"energy": settings["convergence_energy"], "density": settings["convergence_density"]},
        txt=txt,
    )


def label_settings(atoms: Atoms, **overrides) -> dict:
    """The settings record of a label: :data:`GPAW_SETTINGS` plus the k-grid actually used."""
    settings = {**GPAW_SETTINGS, **overrides}
    settings["kpts"] = "x".join(str(k) for k in kpoint_grid(atoms, settings["kpt_density"]))
    return settings
