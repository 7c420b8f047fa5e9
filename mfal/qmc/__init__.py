"""QMC labels: energies with error bars from QMCPACK, pyqmc, or a surrogate oracle.

Importing this package stays free of torch and pyqmc; each backend imports its
heavy dependencies (PySCF, pyqmc, MACE) only when it runs.
"""

from mfal.qmc.base import HARTREE_EV, QmcBackend, QmcJobFailed, QmcResult
from mfal.qmc.registry import BACKENDS, QmcSettings, backend_for, parse_qmc_settings

__all__ = ["BACKENDS", "HARTREE_EV", "QmcBackend", "QmcJobFailed", "QmcResult", "QmcSettings",
           "backend_for", "parse_qmc_settings"]
