"""mfal: active-learning, multi-fidelity orchestrator for MACE interatomic potentials.

Kept free of heavy imports (torch, mace, FireWorks) so that scripts run under a
system Python, such as Debian's GPAW, can still import :mod:`mfal.systems`.
"""

__version__ = "0.1.0"
