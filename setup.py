"""Builds the compiled selection core only; metadata lives in pyproject.toml.

Toggles (environment):
  DISPATCHER_NO_EXTENSIONS=1  pure-Python build, the twin `_core_py` is used.
  DISPATCHER_ANNOTATE=1       write Cython's HTML annotation beside the .pyx.
  DISPATCHER_DEBUG=1          keep bounds checks and build without optimisation.
"""

import os

from setuptools import setup

ext_modules = []
if os.environ.get("DISPATCHER_NO_EXTENSIONS") != "1":
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = os.environ.get("DISPATCHER_DEBUG") == "1"
    directives = {"language_level": "3"}
    if debug:
        directives.update(boundscheck=True, wraparound=True)
    ext_modules = cythonize(
        [
            Extension(
                "dispatcher._core",
                ["dispatcher/_core.pyx"],
                extra_compile_args=["-O0", "-g"] if debug else ["-O2"],
            )
        ],
        compiler_directives=directives,
        annotate=os.environ.get("DISPATCHER_ANNOTATE") == "1",
    )

setup(ext_modules=ext_modules)
