"""bpm-doctor: checks that the Blueprint Manager is the only launcher of blueprint instances."""

__version__ = "0.1.0"
