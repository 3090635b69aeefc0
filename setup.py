"""Only the C part; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pytest_vdens._zygote", ["pytest_vdens/_zygote.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra"])])
