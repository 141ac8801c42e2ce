"""Build script for the C extension fastmp._fastmp; metadata is in
pyproject.toml.  FASTMP_SANITIZE=1 builds with ASan/UBSan."""
import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

# Installed beside the package: in a process started with FASTMP_DROPIN=1
# in its environment (a child of a drop-in program, however it was
# started), it imports fastmp, which turns the drop-in on before anything
# imports multiprocessing.
DROPIN_HOOK = "fastmp-dropin.pth"


class BuildPyWithDropinHook(build_py):
    """build_py that also puts the drop-in hook at the top of the tree."""

    def run(self):
        super().run()
        self.copy_file(os.path.join("Lib", DROPIN_HOOK),
                       os.path.join(self.build_lib, DROPIN_HOOK))

# Only PyInit__fastmp is exported: the C files share their functions
# inside the extension, not with other shared objects.
compile_args = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers", "-fno-strict-aliasing",
                "-fvisibility=hidden"]
link_args = []
if os.environ.get("FASTMP_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=undefined", "-O1", "-g"]
    compile_args += sanitize
    link_args += sanitize
if os.environ.get("FASTMP_WERROR") == "1":
    compile_args.append("-Werror")

setup(
    cmdclass={"build_py": BuildPyWithDropinHook},
    ext_modules=[
        Extension(
            "fastmp._fastmp",
            # one folder per part (see README.md, "Where things live");
            # headers are included by their path from Modules/_fastmp
            sources=sorted(glob.glob("Modules/_fastmp/**/*.c", recursive=True)),
            depends=sorted(glob.glob("Modules/_fastmp/**/*.h", recursive=True)),
            include_dirs=["Modules/_fastmp"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            libraries=["pthread"],
        )
    ],
)
