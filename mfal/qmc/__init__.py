"""QMC labels: energies with error bars from QMCPACK, pyqmc, or a surrogate oracle.

Importing this package stays light; each backend imports its heavy
dependencies (PySCF, pyqmc, MACE) only when used.
"""

from mfal.qmc.base import HARTREE_EV, QmcBackend, QmcJobFailed, QmcResult

__all__ = ["HARTREE_EV", "QmcBackend", "QmcJobFailed", "QmcResult"]
