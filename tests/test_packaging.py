"""Packaging: the wheel and sdist build, and a fresh venv that installs the wheel runs the plugin.

`python -m build` builds the sdist, then the wheel from it, from a copy of the tree
without .git, .venv or build leftovers (CI's unprivileged copy has no .git either). The
build is isolated: its own setuptools from PyPI, so no setuptools plugin or version of
the test environment changes what goes in. The wheel goes into a fresh venv (its
dependencies from PyPI; python-prctl compiles against libcap-dev), which runs pytest on a
marked test and `pyvdens --doctor`. Then libvdeplug goes missing for real: in a private
mount namespace, an empty file is bind-mounted over it.
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOT_USER = os.geteuid() == 0

# the first test waits for the build (~5 s) and the second for the fresh venv (~7 s, with
# python-prctl compiled): more on a slow link to PyPI
pytestmark = pytest.mark.timeout(600)

SUITE = '''
import os
import socket
import sys

import pytest

OUTSIDE = os.readlink("/proc/self/ns/net")  # read at collection, in pytest's own namespace


def test_the_installed_package_is_used():
    import pytest_vdens
    assert pytest_vdens.__file__.startswith(sys.prefix + os.sep), pytest_vdens.__file__


@pytest.mark.vdens
def test_inside_a_namespace_of_its_own():
    assert os.readlink("/proc/self/ns/net") != OUTSIDE
    assert socket.if_nametoindex("vde0")
'''

CLASSIFIERS = ["Framework :: Pytest", "Operating System :: POSIX :: Linux", "Typing :: Typed"]
TRACEBACK = "Traceback (most recent call last)"
MISSING = re.compile(r"cannot load libvdeplug \(.*\): .*; install it with `apt install libvdeplug2`")


def environ() -> dict[str, str]:
    """This environment without what would make a child import this tree or act as part
    of this pytest run (the leak check's PYTEST_VDENS_RUN stays)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
           and (not k.startswith("PYTEST_") or k == "PYTEST_VDENS_RUN")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(argv: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=environ(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def output(out: subprocess.CompletedProcess[str]) -> str:
    return f"rc={out.returncode}\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built from a copy of this tree."""
    assert importlib.util.find_spec("build"), "no `build` module: pip install -e '.[test]'"
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "__pycache__", "build", "dist", "_build", ".*cache",
        ".hypothesis"))
    out = run([sys.executable, "-m", "build", "--outdir", tmp / "dist", src], tmp)
    assert out.returncode == 0, output(out)
    built = sorted((tmp / "dist").iterdir(), key=lambda p: p.suffix)
    assert [p.suffix for p in built] == [".gz", ".whl"], built
    return {"sdist": built[0], "wheel": built[1]}


@pytest.fixture(scope="module")
def venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel installed (dependencies from PyPI); ~50 MB, removed after."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    try:
        out = run([sys.executable, "-m", "venv", where], where.parent)
        assert out.returncode == 0, output(out)
        out = run([where / "bin/python", "-m", "pip", "install", "-q", dists["wheel"]], where.parent)
        assert out.returncode == 0, output(out)
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A project of its own: one unmarked test, one marked test."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_it.py").write_text(SUITE)
    return tmp_path


def test_the_wheel_and_sdist_hold_the_package_and_its_metadata(dists: dict[str, Path]) -> None:
    modules = {f"pytest_vdens/{p.name}" for p in (ROOT / "pytest_vdens").glob("*.py")}
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
        assert modules | {"pytest_vdens/py.typed"} <= names, sorted(names)
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
        metadata = email.parser.Parser().parsestr(whl.read(f"{info}/METADATA").decode())
    assert re.search(r"^\[pytest11\]\nvdens = pytest_vdens\.plugin$", entry_points, re.M), entry_points
    assert re.search(r"^\[console_scripts\]\npyvdens = pytest_vdens\.cli:main$", entry_points,
                     re.M), entry_points
    assert metadata["Name"] == "pytest-vdens"
    assert set(CLASSIFIERS) <= set(metadata.get_all("Classifier") or []), metadata.get_all("Classifier")
    with tarfile.open(dists["sdist"]) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        members = {n.removeprefix(top + "/") for n in sdist.getnames()}
    assert modules | {"pytest_vdens/py.typed", "pyproject.toml", "README.md", "PKG-INFO"} <= members


def test_a_fresh_venv_with_the_wheel_runs_marked_tests_and_the_doctor(venv: Path, suite: Path) -> None:
    out = run([venv / "bin/python", "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers",
               "-rA", suite], suite)
    assert out.returncode == 0, output(out)
    assert re.search(r"^vdens: ready \(", out.stdout, re.M), output(out)  # the plugin's header
    assert re.search(r"^=+ 2 passed", out.stdout, re.M), output(out)
    out = run([venv / "bin/pyvdens", "--doctor"], suite)
    assert out.returncode == 0, output(out)
    assert out.stdout.rstrip().splitlines()[-1].startswith("ready ("), output(out)


def test_without_libvdeplug_the_plugin_and_pyvdens_say_how_to_install_it(
        venv: Path, suite: Path, tmp_path: Path) -> None:
    """libvdeplug, as the installed package loads it, overmounted by an empty file."""
    out = run([venv / "bin/python", "-c", textwrap.dedent("""
        from pytest_vdens.libvdeplug import lib
        lib()
        print(*{line.split()[-1] for line in open("/proc/self/maps") if "/libvdeplug.so" in line})
    """)], tmp_path)
    assert out.returncode == 0 and len(out.stdout.split()) == 1, output(out)
    real = os.path.realpath(out.stdout.strip())
    empty = tmp_path / "empty.so"
    empty.touch()
    # an unprivileged user gets the mount namespace in a user namespace of its own
    unshare = ["unshare", "-m"] if ROOT_USER else ["unshare", "-rm"]
    hide: list[str | Path] = [*unshare, "sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"',
                              "sh", empty, real]

    # uid 0 in that user namespace: its own basetemp, not /tmp/pytest-of-root (the real root's)
    out = run([*hide, venv / "bin/python", "-m", "pytest", "-p", "no:cacheprovider", "-rA",
               f"--basetemp={tmp_path / 'bt'}", suite], suite)
    assert out.returncode == 1, output(out)
    assert MISSING.search(out.stdout), output(out)
    assert re.search(r"^=+ .*1 error.* in ", out.stdout, re.M), output(out)  # the marked test's setup
    assert "1 passed" in out.stdout, output(out)  # the unmarked test needs no namespace
    assert TRACEBACK not in out.stdout + out.stderr, output(out)

    out = run([*hide, venv / "bin/pyvdens", "vde:///nonexistent/sw", "true"], suite)
    assert out.returncode == 1 and out.stdout == "", output(out)
    assert out.stderr.startswith("pyvdens: cannot load libvdeplug (") and MISSING.search(out.stderr)
    assert len(out.stderr.splitlines()) == 1, output(out)

    out = run([*hide, venv / "bin/pyvdens", "--doctor"], suite)
    assert out.returncode == 1, output(out)
    assert re.search(r"^  fail  libvdeplug +cannot load libvdeplug \(", out.stdout, re.M), output(out)
    assert "fix: sudo apt install libvdeplug2" in out.stdout, output(out)
    assert TRACEBACK not in out.stdout + out.stderr, output(out)
