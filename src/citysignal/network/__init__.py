"""Network model: typed intersections, phases, movements, conflicts and neighbours from a SUMO net."""

from citysignal.network.model import Intersection, Lane, Movement, Network, ProgramPhase
from citysignal.network.parse import load_network

__all__ = ["Intersection", "Lane", "Movement", "Network", "ProgramPhase", "load_network"]
