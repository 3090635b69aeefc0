"""The environment check (pyvdens --doctor, pytest --vdens-doctor, the header line).

Each missing piece is simulated for real, in a child: a private mount namespace hides
/dev/net/tun or the plugin directory, a user namespace of its own lowers its limit of
user namespaces to 0, VDEPLUGIN_PATH and PATH point elsewhere. Nothing of the
machine itself is changed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import timeit
from pathlib import Path

import pytest

from pytest_vdens import doctor
from pytest_vdens.libvdeplug import plugin_dirs

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ROOT_USER = os.geteuid() == 0
NAMES = ["user namespaces", "/dev/net/tun", "libvdeplug", "switch:// plugin", "vde:// plugin",
         "vxvde:// plugin", "ptp:// plugin", "slirp:// plugin", "python-prctl", "C extensions",
         "vde_plug"]
# After the report, the header's line: both from the same simulated machine.
CHECK = (f"{PY} -m pytest_vdens --doctor; rc=$?; "
         f"{PY} -c 'from pytest_vdens import doctor; print(doctor.summary(doctor.checks()))'; "
         "exit $rc")


def environ(**changes: str | None) -> dict[str, str]:
    """This environment, importing this tree, with `changes` (None: unset)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env or environ(),
                          cwd="/", timeout=60, check=False)


def pyvdens_doctor(**changes: str | None) -> subprocess.CompletedProcess[str]:
    return run([PY, "-m", "pytest_vdens", "--doctor"], environ(**changes))


def in_mount_ns(setup: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """The doctor (then the header line) after shell `setup`, in a private mount namespace.

    An unprivileged user gets it in a user namespace of its own (`unshare -rm`). With
    `as_nobody`, root runs the doctor as uid 65534, whom root's files refuse too.
    """
    check = CHECK
    if as_nobody and ROOT_USER:
        check = f"exec setpriv --reuid=65534 --regid=65534 --clear-groups sh -c {shlex.quote(CHECK)}"
    unshare = ["unshare", "-m"] if ROOT_USER else ["unshare", "-rm"]
    return run([*unshare, "sh", "-c", f"set -e\n{setup}\nset +e\n{check}"])


def status(report: str, name: str) -> str:
    """The status the report gives check `name` (its line: '  fail  name  found')."""
    line = next(line for line in report.splitlines() if line[8:].startswith(name + " "))
    return line.split()[0]


def assert_problem(out: subprocess.CompletedProcess[str], name: str, found: str,
                   fix: str, rc: int, state: str | None = None) -> None:
    """The report names the problem (a `state`: fail if rc, else warn) and its fix;
    the exit status is `rc`."""
    assert out.returncode == rc, out.stdout + out.stderr
    report = out.stdout
    assert status(report, name) == (state or ("fail" if rc else "warn")), report
    lines = report.splitlines()
    at = next(i for i, line in enumerate(lines) if line[8:].startswith(name + " "))
    assert found in lines[at], report
    fixes = [line.strip() for line in lines[at + 1:at + 3]]
    assert f"fix: {fix}" in fixes, report


def plugin_dir() -> Path:
    return next(d for d in plugin_dirs() if (d / "libvdeplug_switch.so").exists())


# -- this machine ---------------------------------------------------------------------


def test_this_machine_is_ready() -> None:
    out = pyvdens_doctor()
    assert out.returncode == 0, out.stdout + out.stderr
    for name in NAMES:
        assert status(out.stdout, name) == "ok", out.stdout
    assert out.stdout.rstrip().splitlines()[-1].startswith("ready (")
    found = doctor.checks()
    assert [c.name for c in found] == NAMES and doctor.ready(found)
    who = "as root" if ROOT_USER else "unprivileged"
    assert doctor.summary(found) == f"vdens: ready ({who}, plugins: ptp slirp switch vde vxvde)"


def test_the_header_line_costs_a_few_ms() -> None:
    doctor.summary(doctor.checks())  # loads libvdeplug
    best = min(timeit.repeat(lambda: doctor.summary(doctor.checks()), number=1, repeat=5))
    assert best < 0.05, f"{best * 1000:.1f} ms"


def test_the_userns_probe_leaves_no_child() -> None:
    script = textwrap.dedent("""
        import os, signal
        from pytest_vdens import doctor
        for _ in range(3):
            assert doctor.ready(doctor.checks())
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel
        assert doctor.ready(doctor.checks())
        print(repr(open(f"/proc/self/task/{os.getpid()}/children").read()))
    """)
    out = run([PY, "-c", script])
    assert out.returncode == 0, out.stderr
    assert out.stdout == "''\n"


def test_doctor_takes_no_network_or_command() -> None:
    out = run([PY, "-m", "pytest_vdens", "--doctor", "vde:///tmp/sw"])
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == ("pyvdens: --doctor takes no network or command, got "
                          "'vde:///tmp/sw'; run `pyvdens --doctor` alone\n")


# -- each missing piece -----------------------------------------------------------------


def test_user_namespaces_refused() -> None:
    # max_user_namespaces is per user namespace: 0 in ours refuses any nested one
    out = run(["unshare", "-r", "sh", "-c",
               f"echo 0 > /proc/sys/user/max_user_namespaces; {CHECK}"])
    assert_problem(out, "user namespaces", "refused: ENOSPC (No space left on device) because "
                   "user.max_user_namespaces=0", "sudo sysctl -w user.max_user_namespaces=15000",
                   rc=1)
    assert out.stdout.splitlines()[-1].startswith(
        "vdens: NOT ready: user namespaces: refused: ENOSPC")


def test_tun_permission_denied() -> None:
    # a root-owned 0644 file where the device was: the user is refused O_RDWR
    assert os.stat("/etc/passwd").st_uid == 0 and not os.stat("/etc/passwd").st_mode & 0o022
    out = in_mount_ns("mount --bind /etc/passwd /dev/net/tun", as_nobody=True)
    assert_problem(out, "/dev/net/tun", "permission denied", "sudo chmod 0666 /dev/net/tun", rc=1)
    assert out.stdout.splitlines()[-1].startswith(
        "vdens: NOT ready: /dev/net/tun: permission denied (")
    assert out.stdout.splitlines()[-1].endswith(" (run `pyvdens --doctor`)")
    assert [line.split()[0] for line in out.stdout.splitlines() if line[2:6] == "fail"] == ["fail"]


def test_tun_missing() -> None:
    out = in_mount_ns("mount -t tmpfs tmpfs /dev/net")
    assert_problem(out, "/dev/net/tun", "no such file or directory", "sudo modprobe tun "
                   "(in a container: docker run --device /dev/net/tun ...)", rc=1)
    assert out.stdout.splitlines()[-1] == ("vdens: NOT ready: /dev/net/tun: no such file or "
                                           "directory (run `pyvdens --doctor`)")


@pytest.mark.parametrize("value", ["", "EMPTY_DIR"])
def test_vdepluginpath_hides_every_plugin(value: str, tmp_path: Path) -> None:
    """A set VDEPLUGIN_PATH is the only place libvdeplug looks, even when empty."""
    out = pyvdens_doctor(VDEPLUGIN_PATH=str(tmp_path) if value else "")
    shown = repr(str(tmp_path) if value else "")
    assert_problem(out, "switch:// plugin", f"VDEPLUGIN_PATH={shown} hides", "unset VDEPLUGIN_PATH",
                   rc=1)
    for name in ("vde", "vxvde", "ptp", "slirp"):  # vde:// too: it is a plugin like the others
        assert status(out.stdout, f"{name}:// plugin") == "warn"


@pytest.mark.parametrize("hidden, rc", [(["slirp"], 0), (["switch"], 1),
                                        (list(doctor.PLUGINS), 1)])
def test_plugins_not_installed(hidden: list[str], rc: int, tmp_path: Path) -> None:
    """The plugin directory, overmounted by a copy without the `hidden` plugins."""
    copy = tmp_path / "vdeplug"
    copy.mkdir()
    for so in plugin_dir().glob("libvdeplug_*.so"):
        if so.name.removeprefix("libvdeplug_").removesuffix(".so") not in hidden:
            shutil.copy(so, copy)
    out = in_mount_ns(f"mount --bind {copy} {plugin_dir()}")
    for name in hidden:
        fix = "sudo apt install " + ("libvdeplug-slirp" if name == "slirp" else "libvdeplug2")
        assert_problem(out, f"{name}:// plugin", f"libvdeplug_{name}.so not installed", fix,
                       rc, "fail" if name == "switch" else "warn")
    shown = " ".join(sorted(set(doctor.PLUGINS) - set(hidden)))
    if rc == 0:
        assert out.stdout.splitlines()[-1].endswith(f", plugins: {shown})")


def test_prctl_not_importable() -> None:
    script = textwrap.dedent("""
        import sys
        from pytest_vdens import cli
        sys.modules["prctl"] = None  # what `import prctl` meets now: ImportError
        sys.exit(cli.main(["--doctor"]))
    """)
    out = run([PY, "-c", script])
    assert_problem(out, "python-prctl", "cannot import prctl",
                   f"sudo apt install libcap-dev && {PY} -m pip install python-prctl", rc=1)


def test_prctl_not_installed(tmp_path: Path) -> None:
    (tmp_path / "prctl.py").write_text("raise ImportError('no python-prctl here')\n")
    env = environ()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    out = run([PY, "-m", "pytest_vdens", "--doctor"], env)
    assert_problem(out, "python-prctl", "no python-prctl here", "sudo apt install libcap-dev "
                   f"&& {PY} -m pip install python-prctl", rc=1)


def test_unbuilt_c_extensions_are_named_with_their_fix(tmp_path: Path) -> None:
    # the package as a source tree where nobody built the C part
    shutil.copytree(ROOT / "pytest_vdens", tmp_path / "pytest_vdens",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = environ()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    out = run([PY, "-m", "pytest_vdens", "--doctor"], env)
    assert_problem(out, "C extensions", "not built: pytest_vdens._zygote, pytest_vdens._fork",
                   f"sudo apt install gcc python3-dev && {PY} -m pip install --force-reinstall "
                   "--no-deps pytest-vdens", rc=1)
    made = run([PY, "-c", "from pytest_vdens import Namespace; Namespace()"], env)
    assert made.returncode == 1 and "Traceback" in made.stderr
    assert made.stderr.strip().splitlines()[-1] == (
        "pytest_vdens.errors.Unavailable: pytest_vdens._zygote (C) is not built: reinstall "
        "pytest-vdens with a C compiler and the Python headers (sudo apt install gcc python3-dev)")


def test_vde_plug_missing_is_optional() -> None:
    out = pyvdens_doctor(PATH="/nonexistent")
    assert_problem(out, "vde_plug", "not on PATH", "sudo apt install vdeplug", rc=0)
    assert "optional" in out.stdout.split("  warn  vde_plug")[1]


# -- the plugins found are the ones libvdeplug opens --------------------------------------

PROBE = r"""
import ctypes, errno, json
from pytest_vdens import doctor
from pytest_vdens.libvdeplug import lib
urls = {"switch": "switch:///nonexistent/sw", "vde": "vde:///nonexistent/sw",
        "ptp": "ptp:///nonexistent/sw", "vxvde": "vxvde://", "slirp": "slirp://"}
opens = []
for name, url in urls.items():
    ctypes.set_errno(0)
    conn = lib().vde_open_real(url.encode(), b"probe", 1, None)
    if conn or ctypes.get_errno() != errno.EPROTONOSUPPORT:  # the plugin is there
        opens.append(name)
    if conn:
        lib().vde_close(conn)
found = [c.name.split(":")[0] for c in doctor.checks()
         if c.name.endswith(":// plugin") and c.status == "ok"]
print(json.dumps([sorted(opens), sorted(found)]))
"""


@pytest.mark.parametrize("value, expected", [
    (None, doctor.PLUGINS),
    ("", ()),  # set but empty: nowhere
    ("SOME", ("switch", "vde")),
    ("SOME:", ("switch", "vde")),  # a trailing ':' adds nothing
    ("EMPTY:ALL", doctor.PLUGINS),
])
def test_the_plugins_found_are_those_libvdeplug_opens(value: str | None, expected: tuple[str, ...],
                                                      tmp_path: Path) -> None:
    some, empty = tmp_path / "some", tmp_path / "empty"
    some.mkdir()
    empty.mkdir()
    for name in ("switch", "vde"):
        (some / f"libvdeplug_{name}.so").symlink_to(plugin_dir() / f"libvdeplug_{name}.so")
    if value is not None:
        for word, path in (("SOME", some), ("EMPTY", empty), ("ALL", plugin_dir())):
            value = value.replace(word, str(path))
    out = run([PY, "-c", PROBE], environ(VDEPLUGIN_PATH=value))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [sorted(expected)] * 2  # libvdeplug's, the doctor's


# -- pytest ------------------------------------------------------------------------------


def test_the_header_says_ready(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["vdens: default network: *", "vdens: ready (*, plugins: *switch*)"])


def test_the_header_says_what_is_missing(pytester: pytest.Pytester,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")
    monkeypatch.setenv("VDEPLUGIN_PATH", "")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0  # the line warns; tests that need no namespace still run
    result.stdout.fnmatch_lines([("vdens: NOT ready: switch:// plugin: VDEPLUGIN_PATH='' hides "
                                  "*libvdeplug_switch.so (run `pyvdens --doctor`)")])


def test_pytest_vdens_doctor_prints_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_never_run():\n    assert False\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vdens-doctor")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["pytest-vdens environment check (*",
                                 *[f"  ok    {name} *" for name in NAMES], "", "ready (*"])
    assert "collected" not in result.stdout.str()


def test_pytest_vdens_doctor_fails_when_not_ready(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VDEPLUGIN_PATH", "")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vdens-doctor")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["  fail  switch:// plugin  VDEPLUGIN_PATH='' hides *",
                                 "*fix: unset VDEPLUGIN_PATH", "NOT ready: 1 basic item(s) *"])
