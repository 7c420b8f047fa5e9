"""An ASE calculator for molecules with PySCF Kohn-Sham DFT: energies and analytic forces.

The H + H2 low-fidelity reference is spin-unrestricted PBE (UKS) with a settable
Gaussian basis (default cc-pVTZ). Forces are PySCF's analytic gradients with the
integration-grid response included, so they are exactly minus the gradient of the
energy the calculator returns (without the grid response they differ by up to
~1e-4 Hartree/Bohr on default grids). Each geometry starts from the same
superposition-of-atoms guess, so a label never depends on what was computed before.

Beyond about 1.5 Å an H-H bond is past its Coulson-Fischer point: the SCF from
that guess stays on the spin-symmetric solution, up to 1 eV above the
broken-symmetry UKS ground state, and a dataset would mix both surfaces. So the
calculator follows internal instabilities (``follow_instabilities``): after the
SCF converges, PySCF's stability analysis is run and, while it finds a lower
solution, the SCF restarts from it.
"""

from ase import Atoms
from ase.calculators.calculator import Calculator, CalculationFailed, all_changes
from ase.units import Bohr, Hartree

from mfal.systems.errors import SystemSpecError

PYSCF_DEFAULTS = {
    "xc": "PBE",
    "basis": "cc-pVTZ",
    "spin": None,
    "charge": 0,
    "grid_level": 4,
    "conv_tol": 1e-10,
    "max_cycle": 200,
    "follow_instabilities": True,
}
"""``spin`` is the number of unpaired electrons (2S); ``None`` picks 0 or 1 by electron count."""


MAX_INSTABILITY_RESTARTS = 5
"""SCF restarts along internal instabilities; one or two suffice for H3."""


class PySCFCalculator(Calculator):
    """Spin-unrestricted Kohn-Sham DFT (PySCF) for non-periodic ``Atoms``, in eV and eV/Å.

    Parameters are those of :data:`PYSCF_DEFAULTS`. An unknown basis or functional
    raises :class:`SystemSpecError` at construction, before any SCF runs.
    """

    implemented_properties = ["energy", "forces"]
    default_parameters = dict(PYSCF_DEFAULTS)

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(PYSCF_DEFAULTS)
        if unknown:
            raise SystemSpecError(
                f"unknown PySCF setting(s) {sorted(unknown)}; allowed: {sorted(PYSCF_DEFAULTS)}"
            )
        super().__init__(**kwargs)
        _check_basis(self.parameters["basis"])
        _check_xc(self.parameters["xc"])

    def settings(self) -> dict:
        """The method settings as a JSON-able dict (what a label's settings hash is made of)."""
        return {"code": "pyscf", "method": "UKS", **{k: self.parameters[k] for k in PYSCF_DEFAULTS}}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, gradient = uks_energy_and_gradient(self.atoms, **self.parameters)
        self.results["energy"] = energy * Hartree
        self.results["forces"] = -gradient * Hartree / Bohr


def uks_energy_and_gradient(atoms: Atoms, **parameters):
    """UKS total energy (Hartree) and nuclear gradient (Hartree/Bohr, shape (n, 3))."""
    from pyscf import dft, gto

    p = {**PYSCF_DEFAULTS, **parameters}
    if atoms.pbc.any():
        raise SystemSpecError(f"PySCFCalculator handles molecules only, got pbc {tuple(atoms.pbc)}")
    n_electrons = int(atoms.numbers.sum()) - int(p["charge"])
    spin = n_electrons % 2 if p["spin"] is None else int(p["spin"])
    if spin < 0 or (n_electrons - spin) % 2:
        raise SystemSpecError(
            f"spin (2S) = {spin} is impossible for {n_electrons} electrons; it must be >= 0 "
            "and of the same parity as the electron count"
        )
    mol = gto.M(
        atom=[(symbol, tuple(position)) for symbol, position in zip(atoms.get_chemical_symbols(), atoms.positions)],
        basis=p["basis"],
        spin=spin,
        charge=int(p["charge"]),
        unit="Angstrom",
        verbose=0,
    )
    mf = dft.UKS(mol)
    mf.xc = p["xc"]
    mf.grids.level = int(p["grid_level"])
    mf.conv_tol = float(p["conv_tol"])
    mf.max_cycle = int(p["max_cycle"])
    mf, energy = _converged(mf, atoms, p)
    for _ in range(MAX_INSTABILITY_RESTARTS if p["follow_instabilities"] else 0):
        orbitals, _, stable, _ = mf.stability(return_status=True)
        if stable:
            break
        mf, energy = _converged(mf, atoms, p, mf.make_rdm1(orbitals, mf.mo_occ))
    gradients = mf.nuc_grad_method()
    gradients.grid_response = True
    gradients.verbose = 0
    return float(energy), gradients.kernel()


def _converged(mf, atoms: Atoms, p: dict, density=None):
    """Run the SCF (from ``density`` when given), with second-order SCF as the fallback."""
    energy = mf.kernel(dm0=density)
    if not mf.converged:
        mf = mf.newton()
        energy = mf.kernel(dm0=density)
    if not mf.converged:
        raise CalculationFailed(
            f"UKS/{p['xc']}/{p['basis']} did not converge for {atoms.get_chemical_formula()} "
            f"at positions {atoms.positions.round(4).tolist()}"
        )
    return mf, energy


def _check_basis(basis: str) -> None:
    from pyscf.gto import basis as basis_library

    try:
        basis_library.load(basis, "H")
    except Exception:
        raise SystemSpecError(f"unknown Gaussian basis {basis!r}; use a PySCF basis name such as 'cc-pVTZ'") from None


def _check_xc(xc: str) -> None:
    from pyscf.dft import libxc

    try:
        libxc.parse_xc(xc)
    except Exception:
        raise SystemSpecError(f"unknown exchange-correlation functional {xc!r}; use a libxc name such as 'PBE'") from None
