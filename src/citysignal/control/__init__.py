"""Control: controllers behind one SUMO-free interface, and the safety guard that writes every signal."""

from citysignal.control.base import Controller
from citysignal.control.guard import HOLD, GuardStats, SafetyGuard
from citysignal.control.registry import controller_names, make_controller

__all__ = ["HOLD", "Controller", "GuardStats", "SafetyGuard", "controller_names", "make_controller"]
