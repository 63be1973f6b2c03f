"""Domain rules: pure, no I/O, no clock (time is passed in)."""
