"""Reaction systems: path builders for H + H2 exchange and MoS2 S-vacancy migration.

Pure ASE + numpy so that system-Python scripts (Debian's GPAW) can import them.
The PySCF reference calculator lives in :mod:`mfal.systems.pyscf_calculator` and
is imported from there explicitly, since PySCF is an optional dependency.
"""

from mfal.systems.errors import SystemSpecError
from mfal.systems.h3 import (
    H2_BOND,
    H3_EXACT_BARRIER_EV,
    H3_FAR_DISTANCE,
    H3_SADDLE_BOND,
    H3_SPIN,
    h3_chain,
    h3_endpoints,
    h3_path,
)
from mfal.systems.interpolate import interpolate_path
from mfal.systems.mos2 import (
    MOS2_LATTICE,
    MOS2_THICKNESS,
    MOS2_VACUUM,
    mos2_divacancy_endpoints,
    mos2_divacancy_path,
    mos2_monolayer,
    mos2_vacancy_endpoints,
    mos2_vacancy_path,
    top_sulfur_index,
    vacancy_final_by_translation,
)

__all__ = [
    "H2_BOND",
    "H3_EXACT_BARRIER_EV",
    "H3_FAR_DISTANCE",
    "H3_SADDLE_BOND",
    "H3_SPIN",
    "MOS2_LATTICE",
    "MOS2_THICKNESS",
    "MOS2_VACUUM",
    "SystemSpecError",
    "h3_chain",
    "h3_endpoints",
    "h3_path",
    "interpolate_path",
    "mos2_divacancy_endpoints",
    "mos2_divacancy_path",
    "mos2_monolayer",
    "mos2_vacancy_endpoints",
    "mos2_vacancy_path",
    "top_sulfur_index",
    "vacancy_final_by_translation",
]
