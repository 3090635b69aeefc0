"""Only the C parts; everything else is in pyproject.toml."""

from setuptools import Extension, setup


def c(name: str) -> Extension:
    """One of the package's C extensions; both include _clone.h."""
    return Extension(f"pytest_vdens.{name}", [f"pytest_vdens/{name}.c"],
                     depends=["pytest_vdens/_clone.h"], extra_compile_args=["-O2", "-Wall", "-Wextra"])


setup(ext_modules=[c("_zygote"), c("_fork")])
