"""Sulfur-vacancy migration in a 2H MoS2 monolayer.

The reference system of the QMC-refined barrier study (DFT 2.30 eV, QMC 2.85 eV):
one S atom of the top layer hops in-plane into a neighbouring vacancy of the same
layer. The hop distance is the lattice constant ``a``, and the two endpoints are
mapped onto each other by the lattice translation that carries the vacancy from
one site to the next, so they are symmetry-equivalent (equal energies).

In the two-vacancy variant a second top-layer vacancy sits next to both the first
vacancy and the hopping atom; the two endpoints are then mirror images through
the vertical plane that holds the second vacancy.

Cell convention: in-plane lattice vectors ``a1 = (a, 0, 0)`` and
``a2 = (-a/2, a*sqrt(3)/2, 0)`` times the supercell size, a vacuum gap of
``vacuum`` Å between periodic images of the layer along z, pbc ``(True, True,
False)``. Atom order is that of the pristine supercell with the vacancy atoms
removed; the hopping atom keeps its index in every image (``info['moving_index']``).
"""

import numpy as np
from ase import Atoms
from ase.build import mx2
from ase.geometry import find_mic

from mfal.systems.errors import SystemSpecError
from mfal.systems.interpolate import interpolate_path

MOS2_LATTICE = 3.18
"""In-plane lattice constant of 2H MoS2 (Å)."""

MOS2_THICKNESS = 3.13
"""Vertical S-S distance across the layer (Å), the PBE value."""

MOS2_VACUUM = 15.0
"""Vacuum gap between periodic images of the layer (Å)."""

MOS2_ENERGY_ONLY_FORCE = 20.0
"""eV/Å: dataset frames with a larger force component train on their energy alone
(squeezed geometries far above the barrier; see ``scripts/train_base.py``)."""


def mos2_monolayer(
    size: tuple[int, int] = (3, 3),
    a: float = MOS2_LATTICE,
    thickness: float = MOS2_THICKNESS,
    vacuum: float = MOS2_VACUUM,
) -> Atoms:
    """Pristine 2H MoS2 ``size[0] x size[1]`` supercell, centred in z."""
    n, m = _check_size(size, minimum=1)
    if not a > 0 or not thickness > 0:
        raise SystemSpecError(
            f"a and thickness must be positive lengths in Å, got a={a}, thickness={thickness}"
        )
    if not vacuum >= 10.0:
        raise SystemSpecError(
            f"vacuum must be at least 10 Å so periodic layers do not interact, got {vacuum}"
        )
    atoms = mx2("MoS2", kind="2H", a=a, thickness=thickness, size=(n, m, 1), vacuum=vacuum / 2)
    atoms.info["system"] = "mos2"
    atoms.info["supercell"] = f"{n}x{m}"
    return atoms


def mos2_vacancy_endpoints(
    size: tuple[int, int] = (3, 3),
    a: float = MOS2_LATTICE,
    thickness: float = MOS2_THICKNESS,
    vacuum: float = MOS2_VACUUM,
) -> tuple[Atoms, Atoms]:
    """Initial and final states of the in-plane hop of a top-layer S into a vacancy.

    Initial: vacancy at top-layer site ``(i, j)``, the hopping S at ``(i+1, j)``.
    Final: the same atoms, with the hopping S moved onto ``(i, j)``.
    ``info['vacancy_position']`` holds the initial vacancy's Cartesian position.
    """
    n, m = _check_size(size, minimum=2)
    pristine = mos2_monolayer((n, m), a=a, thickness=thickness, vacuum=vacuum)
    i, j = _central_site(n, m)
    return _hop_endpoints(pristine, (n, m), vacancies=[(i, j)], hop_from=(i + 1, j), kind="mos2_vacancy")


def mos2_vacancy_path(
    n_intermediate: int = 5,
    size: tuple[int, int] = (3, 3),
    a: float = MOS2_LATTICE,
    thickness: float = MOS2_THICKNESS,
    vacuum: float = MOS2_VACUUM,
) -> list[Atoms]:
    """Endpoints of :func:`mos2_vacancy_endpoints` and ``n_intermediate`` straight-line images."""
    initial, final = mos2_vacancy_endpoints(size, a=a, thickness=thickness, vacuum=vacuum)
    return interpolate_path(initial, final, n_intermediate)


def mos2_divacancy_endpoints(
    size: tuple[int, int] = (3, 3),
    a: float = MOS2_LATTICE,
    thickness: float = MOS2_THICKNESS,
    vacuum: float = MOS2_VACUUM,
) -> tuple[Atoms, Atoms]:
    """Hop next to a second vacancy: vacancies at ``(i, j)`` and ``(i+1, j+1)``, S hops ``(i+1, j) -> (i, j)``.

    The three top-layer sites form an equilateral triangle of side ``a``, so the
    second vacancy neighbours both the hopping atom and its target site.
    """
    n, m = _check_size(size, minimum=3)
    pristine = mos2_monolayer((n, m), a=a, thickness=thickness, vacuum=vacuum)
    i, j = _central_site(n, m)
    return _hop_endpoints(
        pristine, (n, m), vacancies=[(i, j), (i + 1, j + 1)], hop_from=(i + 1, j), kind="mos2_divacancy"
    )


def mos2_divacancy_path(
    n_intermediate: int = 5,
    size: tuple[int, int] = (3, 3),
    a: float = MOS2_LATTICE,
    thickness: float = MOS2_THICKNESS,
    vacuum: float = MOS2_VACUUM,
) -> list[Atoms]:
    """Endpoints of :func:`mos2_divacancy_endpoints` and ``n_intermediate`` straight-line images."""
    initial, final = mos2_divacancy_endpoints(size, a=a, thickness=thickness, vacuum=vacuum)
    return interpolate_path(initial, final, n_intermediate)


def vacancy_final_by_translation(relaxed_initial: Atoms, size: tuple[int, int] = (3, 3), **geometry) -> Atoms:
    """The final state of the single-vacancy hop, made from a relaxed initial state by symmetry.

    The lattice translation ``t`` from the vacancy site to the hopping atom's site
    carries the initial state (vacancy at V) onto a configuration with the vacancy
    at the hopping atom's old site; relabelling its atoms to the order of
    :func:`mos2_vacancy_endpoints` gives the relaxed final state, exactly equivalent
    to the initial one, without a second relaxation. ``geometry`` (``a``,
    ``thickness``, ``vacuum``) must match the one ``relaxed_initial`` was built with.
    """
    template_initial, template_final = mos2_vacancy_endpoints(size, **geometry)
    if list(relaxed_initial.numbers) != list(template_initial.numbers):
        raise SystemSpecError(
            f"relaxed_initial ({relaxed_initial.get_chemical_formula()}) does not hold the atoms of a "
            f"{size[0]}x{size[1]} vacancy cell in the builder's order"
        )
    mover = template_initial.info["moving_index"]
    shift = template_initial.positions[mover] - template_final.positions[mover]
    translated = relaxed_initial.positions + shift
    cell, pbc = relaxed_initial.cell, relaxed_initial.pbc
    positions = np.empty_like(translated)
    taken = set()
    for k, site in enumerate(template_final.positions):
        offsets, _ = find_mic(translated - site, cell, pbc)
        distance = np.linalg.norm(offsets, axis=1)
        distance[relaxed_initial.numbers != template_final.numbers[k]] = np.inf
        j = int(distance.argmin())
        if distance[j] > 0.5 * MOS2_LATTICE or j in taken:
            raise SystemSpecError(
                "relaxed_initial is too far from the ideal vacancy cell to be mapped by symmetry "
                f"(atom {k}: nearest translated atom {distance[j]:.2f} Å away)"
            )
        taken.add(j)
        positions[k] = site + offsets[j]
    final = relaxed_initial.copy()
    final.positions = positions
    return final


def top_sulfur_index(atoms: Atoms, site: tuple[int, int], size: tuple[int, int]) -> int:
    """Index of the top-layer S atom on primitive-cell site ``site`` of a pristine supercell."""
    n, m = size
    target = np.array([(site[0] + 2 / 3) / n, (site[1] + 1 / 3) / m])
    z_mo = atoms.positions[atoms.numbers == 42, 2].mean()
    scaled = atoms.get_scaled_positions(wrap=True)[:, :2]
    for index in np.flatnonzero((atoms.numbers == 16) & (atoms.positions[:, 2] > z_mo)):
        offset = scaled[index] - target
        offset -= np.round(offset)
        if np.all(np.abs(offset) < 1e-6):
            return int(index)
    raise SystemSpecError(f"no top-layer S atom on site {site} of a {n}x{m} supercell")


def _hop_endpoints(
    pristine: Atoms, size: tuple[int, int], vacancies: list[tuple[int, int]], hop_from: tuple[int, int], kind: str
) -> tuple[Atoms, Atoms]:
    removed = [top_sulfur_index(pristine, site, size) for site in vacancies]
    mover = top_sulfur_index(pristine, hop_from, size)
    target = pristine.positions[removed[0]].copy()
    initial = pristine.copy()
    del initial[sorted(removed)]
    moving_index = mover - sum(1 for r in removed if r < mover)
    initial.info.update(
        system=kind,
        moving_index=moving_index,
        vacancy_position=target,
    )
    final = initial.copy()
    final.positions[moving_index] = target
    return initial, final


def _central_site(n: int, m: int) -> tuple[int, int]:
    return (n - 1) // 2, (m - 1) // 2


def _check_size(size, minimum: int) -> tuple[int, int]:
    try:
        n, m = (int(s) for s in size)
    except (TypeError, ValueError):
        raise SystemSpecError(f"size must be a pair of integers (n, m), got {size!r}") from None
    if n < minimum or m < minimum or (n, m) != tuple(size):
        raise SystemSpecError(
            f"size must be two integers >= {minimum} for this structure, got {tuple(size)}"
        )
    return n, m
