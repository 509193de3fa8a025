"""Digital twin: one SUMO session per process, vectorized observations, guarded actuation."""

from citysignal.twin.observation import LANE_FIELDS, Observation, ProgramPosition
from citysignal.twin.session import DEFAULT_SEED, Twin

__all__ = ["DEFAULT_SEED", "LANE_FIELDS", "Observation", "ProgramPosition", "Twin"]
