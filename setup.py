"""Build script for the C extension fastmp._fastmp; metadata is in
pyproject.toml.  FASTMP_SANITIZE=1 builds with ASan/UBSan."""
import glob
import os

from setuptools import Extension, setup

compile_args = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers", "-fno-strict-aliasing"]
link_args = []
if os.environ.get("FASTMP_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=undefined", "-O1", "-g"]
    compile_args += sanitize
    link_args += sanitize
if os.environ.get("FASTMP_WERROR") == "1":
    compile_args.append("-Werror")

setup(
    ext_modules=[
        Extension(
            "fastmp._fastmp",
            sources=sorted(glob.glob("Modules/_fastmp/*.c")),
            depends=glob.glob("Modules/_fastmp/*.h"),
            include_dirs=["Modules/_fastmp"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=["pthread"],
        )
    ],
)
