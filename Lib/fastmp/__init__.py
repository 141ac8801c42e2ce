"""fastmp: Python's multiprocessing package with a C core."""
__version__ = "0.1.0"
