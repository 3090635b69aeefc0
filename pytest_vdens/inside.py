"""Running one pytest item inside a namespace: fork, join, ship the reports back.

The item's run protocol (setup, call, teardown) runs in a child forked from
pytest that joins the namespace, as pytest-forked does. Fixtures of wider scope
are set up here in the parent first, so they are shared and torn down once;
function-scoped ones live inside. Reports travel through pytest's report
serialization hooks; warnings are re-issued in the parent.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import pickle
import resource
import select
import signal
import struct
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _pytest.runner import CallInfo, call_and_report

from . import client
from .errors import CallCrashed, VdensError
from .namespace import Namespace, describe_status

#: pytest-timeout's (seconds, method) for a test.
Timeout = tuple[float, str]

# After the timeout, how long the child has to finish (signal method: its
# teardown) before the parent kills it.
_GRACE = 5.0


def setup_wider_fixtures(item: pytest.Item) -> None:
    """Set up the item's collectors and its fixtures wider than function scope, here."""
    state = item.session._setupstate
    state.setup(item.parent)  # type: ignore[arg-type]
    if not item._request:  # type: ignore[attr-defined]
        item._initrequest()  # type: ignore[attr-defined]
    defs = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
    # The item counts as active while its fixtures are requested, without being
    # set up: its own setup happens in the child.
    state.stack[item] = ([], None)
    try:
        for name in item.fixturenames:  # type: ignore[attr-defined]
            if name in defs and defs[name][-1].scope != "function":
                item._request.getfixturevalue(name)  # type: ignore[attr-defined]
    finally:
        del state.stack[item]


def report_error(item: pytest.Item, when: str, fn: Callable[[], object]) -> pytest.TestReport | None:
    """Run fn here as phase `when`; a report if it raised (or skipped), else None."""
    call = CallInfo.from_call(fn, when=when)  # type: ignore[arg-type]
    if call.excinfo is None:
        return None
    report: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=call)
    return report


def run(item: pytest.Item, nextitem: pytest.Item | None, ns: Namespace,
        timeout: Timeout | None = None) -> list[pytest.TestReport]:
    """The item's reports, its protocol having run inside `ns`.

    With a `timeout` (pytest-timeout's, which this replaces for the item), the
    child enforces it itself and the parent kills it if it overruns.
    """
    config = item.config
    r, w = os.pipe()
    dump = os.memfd_create("vdens-timeout")  # where a timed-out child's stacks go
    # A helper the test starts inside (make_vdens_ns in a marked test) keeps its
    # files in ours: if pytest is killed, ours removes them with its own.
    scratch = client.helper().tmpdir
    reap()
    try:
        gc.freeze()  # the child's collections leave our objects alone: fewer pages copied
        try:
            pid = _fork_inside(ns)
        except BaseException:
            gc.unfreeze()
            os.close(w)
            raise
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            os.environ["TMPDIR"] = scratch
            tempfile.tempdir = None
            _child(item, w, timeout, dump)
        gc.unfreeze()
        os.close(w)
        deadline = None if timeout is None else time.monotonic() + timeout[0] + _GRACE
        try:
            data, status, overran = _collect(pid, r, deadline)
        except BaseException:  # e.g. ^C: stop the child too
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        if status is None:  # it said it was done, and is exiting
            _exiting.append(pid)
        stacks = os.pread(dump, 1 << 20, 0).decode(errors="replace")
    finally:
        os.close(r)
        os.close(dump)
    reports: list[pytest.TestReport] = []
    for kind, payload in _messages(data):
        if kind == "report":
            reports.append(config.hook.pytest_report_from_serializable(config=config, data=payload))
        else:
            _reissue(payload)
    if not reports or reports[-1].when != "teardown":
        last = reports[-1] if reports else None
        when = ("setup" if last is None else
                "call" if last.when == "setup" and last.passed else "teardown")
        if timeout is not None and (stacks or overran):
            how = (f"Timeout (>{timeout[0]}s) from pytest-timeout: the test process was "
                   f"stopped inside its namespace, during {when}")
            reports.append(_failure(item, when, how + (f"\n{stacks}" if stacks else "")))
        else:
            how = "ended without all its reports" if status is None else describe_status(status)
            reports.append(_failure(item, when, f"the test process {how} inside its namespace, "
                                                f"during {when}"))
    return reports


def _fork_inside(ns: Namespace) -> int:
    """Fork the test's process into `ns`, as our own child: its pid, or 0 in it."""
    try:
        return ns.fork()
    except OSError as e:
        raise CallCrashed(f"could not enter {ns!r} to run the test: {e}") from None


def _collect(pid: int, r: int, deadline: float | None) -> tuple[bytes, int | None, bool]:
    """What the child sends, its wait status (None if it said it was done), and
    whether it overran.

    The end is the child's last message, or its exit: not EOF, since a process
    it left running inside may hold the pipe until the namespace closes. Its
    exit (unmapping a copy of pytest) is not waited for after its last message.
    """
    pidfd = os.pidfd_open(pid)
    data = bytearray()
    seen = 0  # where the first frame not yet seen whole starts
    overran = False
    try:
        poller = select.poll()  # not select(): fds may be past 1024
        poller.register(r, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            ready = [fd for fd, _ in poller.poll(wait)]
            if not ready:
                overran = True
                deadline = None
                os.kill(pid, signal.SIGKILL)
            elif r in ready:
                chunk = os.read(r, 1 << 16)
                data += chunk
                if not chunk:
                    poller.unregister(r)
                for end, size in _frames(data, seen):
                    if size == 0:
                        return bytes(data), None, overran
                    seen = end
            else:
                os.set_blocking(r, False)
                try:
                    while chunk := os.read(r, 1 << 16):
                        data += chunk
                except BlockingIOError:
                    pass
                return bytes(data), os.waitpid(pid, 0)[1], overran
    finally:
        os.close(pidfd)


#: The children that said they were done, reaped once they are gone. Before that
#: their namespace's init cannot finish exiting (the kernel waits for every
#: process of a PID namespace to be reaped), so whoever waits for one reaps first.
_exiting: list[int] = []


def reap(block: bool = False) -> None:
    """Reap the children that ran a test and said they were done (block: all)."""
    for pid in list(_exiting):
        try:
            done = os.waitpid(pid, 0 if block else os.WNOHANG)[0]
        except ChildProcessError:  # reaped by someone else
            done = pid
        if done:
            _exiting.remove(pid)


def _failure(item: pytest.Item, when: str, message: str) -> pytest.TestReport:
    def failed() -> None:
        pytest.fail(message, pytrace=False)

    report = report_error(item, when, failed)
    assert report is not None
    return report


class _Child:
    """What the forked child knows about its own run (None in the parent)."""

    def __init__(self, dump: int) -> None:
        self.dump = dump
        self.cancel: Callable[[], None] | None = None


_child_state: _Child | None = None


def in_child() -> bool:
    """Whether this process is the child running a marked test."""
    return _child_state is not None


def arm_timeout(seconds: float, method: str) -> None:
    """In the child: pytest-timeout's timeout, with the same two methods.

    signal: SIGALRM fails the test where it is, and its teardown runs.
    thread: a watchdog thread (faulthandler's) dumps every stack for the
    parent's report and ends the child, not the worker.
    """
    assert _child_state is not None
    disarm_timeout()
    if method == "thread":
        faulthandler.dump_traceback_later(seconds, exit=True, file=_child_state.dump)
        _child_state.cancel = faulthandler.cancel_dump_traceback_later
        return

    def expired(signum: int, frame: object) -> None:
        __tracebackhide__ = True
        pytest.fail(f"Timeout (>{seconds}s) from pytest-timeout.")

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        faulthandler.cancel_dump_traceback_later()

    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    # A child stuck where no signal handler runs (a lock a parent thread held
    # at fork time): dump its stacks and end it, before the parent has to.
    faulthandler.dump_traceback_later(seconds + _GRACE - 2, exit=True, file=_child_state.dump)
    _child_state.cancel = cancel


def disarm_timeout() -> bool:
    """In the child: cancel arm_timeout's timer; whether there was one."""
    if _child_state is None or _child_state.cancel is None:
        return False
    _child_state.cancel()
    _child_state.cancel = None
    return True


def _child(item: pytest.Item, w: int, timeout: Timeout | None, dump: int) -> None:
    """Run the protocol here and stream each report out. Never returns."""
    global _child_state
    _child_state = _Child(dump)
    config = item.config
    code = 0
    pipe = os.fdopen(w, "wb")  # never closed: its end is our last message
    try:
        def send(kind: str, payload: Any) -> None:
            data = pickle.dumps((kind, payload))
            pipe.write(struct.pack("!I", len(data)) + data)
            pipe.flush()

        def phase(when: Any, **kw: Any) -> pytest.TestReport:
            rep = call_and_report(item, when, log=False, **kw)
            send("report", config.hook.pytest_report_to_serializable(config=config, report=rep))
            return rep

        if timeout is not None:
            arm_timeout(*timeout)
        with warnings.catch_warnings(record=True) as caught:
            if phase("setup").passed:
                phase("call")
            # only the item: its collectors belong to the parent
            phase("teardown", nextitem=item.parent)
        disarm_timeout()
        for warning in caught:
            send("warning", _portable(warning))
    except BaseException:
        code = 70
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            # a helper this test started (nested namespaces) cleans up before
            # the namespace, and the helper in it, are killed
            client.shutdown()
        except (VdensError, OSError):
            pass
        if code == 0:
            # Done: our sockets closed (a session namespace's next test may bind
            # the same ports), the parent goes on while we unmap our memory.
            os.closerange(0, w)
            os.closerange(w + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            os.write(w, struct.pack("!I", 0))
        os._exit(code)


def _portable(w: warnings.WarningMessage) -> tuple[Any, ...]:
    category: type[Warning] = w.category
    try:
        pickle.dumps(category)
    except Exception:
        category = UserWarning
    return (str(w.message), category, w.filename, w.lineno)


def _reissue(payload: tuple[Any, ...]) -> None:
    message, category, filename, lineno = payload
    warnings.warn_explicit(message, category, filename, lineno)


def _frames(data: bytes | bytearray, pos: int = 0) -> Iterator[tuple[int, int]]:
    """Each whole frame from `pos` on: where the next one starts, and its size.

    A frame is a 4-byte size and that many bytes; size 0 is the child's last.
    One cut short (a crash, or not all read yet) ends them.
    """
    while pos + 4 <= len(data):
        size: int = struct.unpack_from("!I", data, pos)[0]
        if pos + 4 + size > len(data):
            return
        pos += 4 + size
        yield pos, size


def _messages(data: bytes) -> Iterator[tuple[str, Any]]:
    for end, size in _frames(data):
        if size == 0:
            return
        try:
            yield pickle.loads(data[end - size:end])
        except Exception:
            return
