"""The version of fastnn."""

__version__ = "0.1.0"
