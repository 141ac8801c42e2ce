"""The Windows spawn start method of the standard package.

fastmp runs on Linux only.  The module is here so that the package holds
the same modules as the standard one (CPython's test-suite lists them);
importing it fails as the standard module does off Windows."""
raise ImportError("fastmp.popen_spawn_win32 exists only on Windows, and fastmp supports Linux only")
