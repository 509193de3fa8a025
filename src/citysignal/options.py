"""Command-line options that `bench` and `serve` share: one declaration, one help text, one bound each."""

from __future__ import annotations

from typing import Annotated

import typer

from citysignal.field.command import FIELD_HELP
from citysignal.scenarios.priority import BUSES_HELP, EMERGENCY_HELP, NO_PRIORITY_HELP
from citysignal.scenarios.registry import END_HELP

FAULTS_HELP = (
    "Fraction (0-1) of the lanes whose detectors fail (--fault-kind), for the controllers and the guard, never the "
    "metrics or KPIs; the controller then runs behind detector checks (queue model, fixed-time fallback). 0: the "
    "checks on healthy detectors; default: no checks."
)

Begin = Annotated[str | None, typer.Option(help="Episode start (s or clock time); default: the scenario's.")]
End = Annotated[str | None, typer.Option(help=END_HELP)]
MaxRed = Annotated[float, typer.Option(min=1.0, help="Safety guard's max-red bound (s).")]
DetectorFaults = Annotated[float | None, typer.Option(help=FAULTS_HELP)]
FaultKind = Annotated[str, typer.Option(help="stuck, missing, noisy, chattering or mixed.")]
FaultSeed = Annotated[int, typer.Option(help="Seed of the draw of faulty lanes, kinds and onsets.")]
EmergencyPerHour = Annotated[float, typer.Option(min=0.0, help=EMERGENCY_HELP)]
BusesPerHour = Annotated[float, typer.Option(min=0.0, help=BUSES_HELP)]
NoPriority = Annotated[bool, typer.Option("--no-priority", help=NO_PRIORITY_HELP)]
Field = Annotated[str | None, typer.Option("--field", help=FIELD_HELP)]
