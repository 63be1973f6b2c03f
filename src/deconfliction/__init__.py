"""deconfliction: keep the aircraft of parties who share airspace out of each other's way."""

__version__ = "0.1.0"
