"""Settings of the readout refit, as a pydantic model a campaign config can embed.

Exactly one force-penalty mode is active: a fixed weight ``force_weight``
(lambda), or the hard form ``force_rms_tolerance`` (delta, default 0.05 eV/Å),
for which the weakest penalty that keeps the force deviation within delta is
searched for each member, then strengthened as long as the labels stay fitted
to their error bars (chi^2 per degree of freedom <= 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_FORCE_RMS_TOLERANCE = 0.05
"""eV/Å: how far (RMS over force components) the refit may move the anchors' forces by default."""


class RefitSettings(BaseModel):
    """How a committee is refitted on high-fidelity energies.

    Loss of one member: ``sum(((E_pred - E_label) / sigma)^2) + force_weight *
    mean_atoms(|F_pred - F_ref|^2)`` with ``sigma = max(error bar, sigma_floor)``
    and F_ref the forces of the member's own DFT-trained base model on the anchors.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    force_weight: float | None = Field(
        default=None,
        ge=0,
        description="lambda in (eV/Å)^-2; give this or force_rms_tolerance, not both",
    )
    force_rms_tolerance: float | None = Field(
        default=DEFAULT_FORCE_RMS_TOLERANCE,
        gt=0,
        description="delta in eV/Å: bound on RMS(F_pred - F_ref) over all anchor force components",
    )
    sigma_floor: float = Field(
        default=1e-3,
        gt=0,
        description="eV; smallest error bar a label is weighted with (labels without one are stored as 0)",
    )
    offset_mode: Literal["auto", "shared", "per_element"] = Field(
        default="auto",
        description="auto: one shared per-atom offset when all labels share one composition, else per element",
    )
    bootstrap: bool = Field(
        default=False,
        description="each member refits on its own bootstrap resample of the labels; off by default because "
        "with the few labels of early cycles a resample that misses the saddle (or its reference) leaves that "
        "member unable to move the barrier at all, which drags the committee mean back to the DFT barrier",
    )
    perturb_energies: bool = Field(
        default=True, description="each member's label energies get N(0, sigma) noise of their own"
    )
    seed: int = Field(default=0, description="seed of the resampling and the perturbations")
    calibrate: bool = Field(default=True, description="leave-one-out calibration of the refitted committee")
    anchor_batch_size: int = Field(
        default=25, ge=1, description="anchor structures per graph batch while computing force responses"
    )
    rcond: float = Field(
        default=1e-10, gt=0, lt=1, description="relative singular-value cutoff of the least-squares solves"
    )
    search_start: float = Field(default=1.0, gt=0, description="first lambda tried by the tolerance search")
    search_max: float = Field(default=1e12, gt=0, description="largest lambda the tolerance search tries")
    search_rtol: float = Field(
        default=1e-3, gt=0, lt=1, description="the search stops once the deviation is within delta*(1 - rtol)..delta"
    )
    search_max_steps: int = Field(default=200, ge=1, description="bisection steps allowed to the tolerance search")

    @model_validator(mode="before")
    @classmethod
    def _weight_replaces_default_tolerance(cls, data):
        """A given force_weight switches the default tolerance off; giving both is an error."""
        if isinstance(data, dict) and data.get("force_weight") is not None:
            if data.get("force_rms_tolerance") is not None:
                raise ValueError(
                    "give either force_weight (lambda) or force_rms_tolerance (delta), not both; "
                    f"got force_weight={data['force_weight']!r} and force_rms_tolerance={data['force_rms_tolerance']!r}"
                )
            data = {**data, "force_rms_tolerance": None}
        return data

    @model_validator(mode="after")
    def _one_force_mode(self):
        if self.force_weight is None and self.force_rms_tolerance is None:
            raise ValueError("one of force_weight (lambda) or force_rms_tolerance (delta) is needed")
        if self.search_start > self.search_max:
            raise ValueError(f"search_start {self.search_start} exceeds search_max {self.search_max}")
        return self

    @property
    def constrained(self) -> bool:
        """True for the hard form (search for lambda), False for a fixed lambda."""
        return self.force_rms_tolerance is not None
