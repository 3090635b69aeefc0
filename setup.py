"""Only the C parts; everything else is in pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra"]
setup(ext_modules=[Extension("pytest_vdens._zygote", ["pytest_vdens/_zygote.c"], extra_compile_args=FLAGS),
                   Extension("pytest_vdens._fork", ["pytest_vdens/_fork.c"], extra_compile_args=FLAGS)])
