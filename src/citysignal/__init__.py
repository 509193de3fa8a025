"""citysignal: city-wide adaptive traffic-signal control on an Eclipse SUMO digital twin."""

__version__ = "0.1.0"
