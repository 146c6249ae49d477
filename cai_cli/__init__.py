"""cai: Constitutional AI from the shell."""

__version__ = "0.1.0"
