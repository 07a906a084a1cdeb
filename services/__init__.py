"""smf — Sound Model Factory: a folder of sounds to a playable parametric sound model."""

__version__ = "0.1.0"
