"""Request and response bodies of the API (pydantic): every body is validated, unknown fields refused."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

IntersectionId = Annotated[str, Field(min_length=1, max_length=128)]


class OverrideRequest(BaseModel):
    """Hold the green that is showing, force a green, or return the intersection to its controller."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["hold", "force", "auto"] = Field(description="hold: keep the current green; force: go to "
                                                   "`green`; auto: back to the assigned controller")  # fmt: skip
    green: int | None = Field(default=None, ge=0, le=255, description="Index of the green to force (mode force only).")
    reason: str = Field(default="", max_length=200, description="Why, for the audit log.")

    @model_validator(mode="after")
    def _green_only_for_force(self) -> OverrideRequest:
        if self.mode == "force" and self.green is None:
            raise ValueError("mode 'force' needs 'green'")
        if self.mode != "force" and self.green is not None:
            raise ValueError(f"'green' applies to mode 'force' only, not '{self.mode}'")
        return self


ControllerName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")]


class ControllerRequest(BaseModel):
    """Switch the controller of some intersections (operator) or of the whole city (admin)."""

    model_config = ConfigDict(extra="forbid")

    controller: ControllerName
    intersections: list[IntersectionId] | None = Field(
        default=None, min_length=1, max_length=10000, description="Intersection ids; omit for city-wide (admin)."
    )
    whatif: int | None = Field(default=None, ge=1, le=2**63 - 1, description="The what-if race whose candidate "
                               "this switch deploys (a finished race of this run), for the audit log.")  # fmt: skip


class WhatIfRequest(BaseModel):
    """Fork the live twin now and race candidate controllers, city-wide, over a horizon."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[ControllerName] = Field(min_length=1, max_length=8, description="Controllers to race "
                                             "(those the service offers, see /api/info).")  # fmt: skip
    horizon: int = Field(ge=60, le=3600, description="Simulated seconds each candidate runs from the fork.")

    @model_validator(mode="after")
    def _distinct(self) -> WhatIfRequest:
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError("a candidate is named twice")
        return self


class ActionResult(BaseModel):
    """An operator action as recorded: the audit record was committed before this answer was sent."""

    event_id: int
    action: str
    target: str
    result: str
    detail: dict[str, Any]


class Me(BaseModel):
    name: str
    role: Literal["viewer", "operator", "admin"]


class Health(BaseModel):
    status: Literal["ok", "degraded", "restarting", "error"] = Field(
        description="degraded: the twin is frozen (simulated time stands still); restarting: from its latest "
        "snapshot after it died; error: it cannot run. Anything but ok answers 503."
    )
    running: bool
    sim_time: float | None
    error: str | None = Field(description="What is wrong, in words (None when ok).")
    store_write_errors: int
