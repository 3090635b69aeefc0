"""Running one pytest item inside a namespace: fork, join, ship the reports back.

The item's run protocol (setup, call, teardown) runs in a child forked from
pytest that joins the namespace, as pytest-forked does. Fixtures of wider scope
are set up here in the parent first, so they are shared and torn down once;
function-scoped ones live inside. Reports travel through pytest's report
serialization hooks; warnings are re-issued in the parent.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _pytest.runner import CallInfo, call_and_report

from .namespace import Namespace, describe_status

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


def run(item: pytest.Item, nextitem: pytest.Item | None, ns: Namespace) -> list[pytest.TestReport]:
    """The item's reports, its protocol having run inside `ns`."""
    config = item.config
    r, w = os.pipe()
    pid = ns.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        _child(item, w)
    os.close(w)
    reports: list[pytest.TestReport] = []
    try:
        with os.fdopen(r, "rb") as pipe:
            for kind, payload in _messages(pipe):
                if kind == "report":
                    reports.append(config.hook.pytest_report_from_serializable(
                        config=config, data=payload))
                else:
                    _reissue(payload)
        status = os.waitpid(pid, 0)[1]
    except BaseException:  # e.g. pytest-timeout's signal method: stop the child too
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    if not reports or reports[-1].when != "teardown":
        last = reports[-1] if reports else None
        when = ("setup" if last is None else
                "call" if last.when == "setup" and last.passed else "teardown")
        reports.append(_crash_report(item, when, describe_status(status)))
    return reports


def _crash_report(item: pytest.Item, when: str, how: str) -> pytest.TestReport:
    def crashed() -> None:
        pytest.fail(f"the test process {how} inside its namespace, during {when}", pytrace=False)

    report = report_error(item, when, crashed)
    assert report is not None
    return report


def _child(item: pytest.Item, w: int) -> None:
    """Run the protocol here and stream each report out. Never returns."""
    config = item.config
    code = 0
    try:
        with os.fdopen(w, "wb") as pipe:
            def send(kind: str, payload: Any) -> None:
                data = pickle.dumps((kind, payload))
                pipe.write(struct.pack("!I", len(data)) + data)
                pipe.flush()

            def phase(when: Any, **kw: Any) -> pytest.TestReport:
                rep = call_and_report(item, when, log=False, **kw)
                send("report", config.hook.pytest_report_to_serializable(config=config, report=rep))
                return rep

            with warnings.catch_warnings(record=True) as caught:
                if phase("setup").passed:
                    phase("call")
                # only the item: its collectors belong to the parent
                phase("teardown", nextitem=item.parent)
            for warning in caught:
                send("warning", _portable(warning))
    except BaseException:
        code = 70
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
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


def _messages(pipe: Any) -> Iterator[tuple[str, Any]]:
    while header := pipe.read(4):
        if len(header) < 4:
            return
        data = pipe.read(struct.unpack("!I", header)[0])
        try:
            yield pickle.loads(data)
        except Exception:
            return
