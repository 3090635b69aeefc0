"""pytest glue: the vdens marker, its fixtures and options. The engine lives elsewhere."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import pytest
from _pytest.config import create_terminal_writer
from _pytest.skipping import evaluate_skip_marks

from . import addressing, capabilities, diagnose, doctor, inside
from .errors import ArgumentError, Unavailable, VdensError
from .namespace import Namespace, normalize_nets
from .resolver import check_resolvconf, parse_addresses
from .switch import Switch

MARKER = """vdens(nets=None, iface="vde", resolver=None, resolvconf=None, sysadm=False, caps=None, \
scope="function", isolate=True, addr=None, mac=None, capture=None): \
run this test INSIDE a private user+network namespace (pytest-vdens). \
Setup, call and teardown happen in a child forked from pytest that joins the namespace, so \
function-scoped fixtures live inside; fixtures of wider scope are set up outside first and shared. \
nets: libvdeplug URLs, one interface each (vde0, vde1, ...; vde://, vxvde://, slirp://, ptp://, \
switch://, hub://, udp://, null://, or a switch path); omitted: the test's default network \
(--vdens-switch, else an embedded switch of its own); "-" or "no": no interface. \
iface: interface name prefix. resolver: DNS server addresses for /etc/resolv.conf ("a,b" or a \
list). resolvconf: a file to use as /etc/resolv.conf. caps: capabilities inside (None: \
NET_ADMIN, NET_RAW, NET_BIND_SERVICE, NET_BROADCAST; [] for none). sysadm: add SYS_ADMIN. \
scope: "function" for a fresh namespace, "session" to share one per worker (vdens_session_ns's). \
isolate=False: run this test normally, outside, even under --vdens-isolate (which runs every \
unmarked test as if marked vdens(nets="no"): its own loopback and ports). \
addr: "auto" (a unique IPv4 and IPv6 ULA per network; slirp's 10.0.2.15, gateway and DNS on \
slirp://) or one CIDR (or list of CIDRs) per interface; the interfaces come up. mac: one MAC \
per interface (default: stable for the test). capture: "no", "on-failure" or "always" \
(default: --vdens-capture): record each interface's frames to pcap, kept when the test fails \
(or always), and summarized in the failure report with the namespace's network state."""

KEYS = ("nets", "iface", "resolver", "resolvconf", "sysadm", "caps", "scope", "isolate", "addr",
        "mac", "capture")
SCOPES = ("function", "session")
CAPTURE = ("no", "on-failure", "always")
FIXTURES = ("vdens_ns", "make_vdens_ns", "vdens_switch")
# Tests using these drive namespaces from outside: --vdens-isolate leaves them there.
OUTSIDE_FIXTURES = (*FIXTURES, "vdens_session_ns", "make_vdens_net")

_ACTIVE = pytest.StashKey[Namespace]()
_SWITCH = pytest.StashKey[str]()
_STATE = pytest.StashKey["State"]()
_USED = pytest.StashKey[list[Namespace]]()  # namespaces of a test, checked for dead networks
_TIMEOUT = pytest.StashKey[inside.Timeout]()  # pytest-timeout's, enforced by inside.run
_FAILED = pytest.StashKey[bool]()  # the test failed: keep its captures
_KEPT = pytest.StashKey[Path]()  # where its captures are kept
_COUNT = pytest.StashKey[int]()  # namespaces made for it so far


@dataclass(frozen=True)
class Spec:
    """What a namespace should be: the marker's (or factory's) arguments, checked."""

    nets: tuple[str | None, ...] = (None,)
    iface: str = "vde"
    resolver: tuple[str, ...] = ()
    resolvconf: str | None = None
    sysadm: bool = False
    caps: tuple[str, ...] | None = None
    scope: str = "function"
    isolate: bool = True
    addr: str | tuple[tuple[str, ...], ...] | None = None
    mac: tuple[str, ...] | None = None
    capture: str = "on-failure"

    @classmethod
    def parse(cls, base: Spec, where: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Spec:
        if len(args) > 1:
            raise ArgumentError(f"{where} takes at most one positional argument (nets), "
                                f"got {len(args)}: {args!r}")
        if args:
            kwargs = {"nets": args[0], **kwargs}
        unknown = sorted(set(kwargs) - set(KEYS))
        if unknown:
            raise ArgumentError(f"{where} got unknown argument(s) {', '.join(unknown)}; "
                                f"allowed: {', '.join(KEYS)}")
        spec = replace(base)
        if "nets" in kwargs:
            spec = replace(spec, nets=tuple(normalize_nets(kwargs["nets"])))
        if "iface" in kwargs:
            if not isinstance(kwargs["iface"], str):
                raise ArgumentError(f"{where}: iface={kwargs['iface']!r} is not a string; "
                                    "use e.g. 'vde' or 'eth'")
            spec = replace(spec, iface=kwargs["iface"])
        for key, types, want in (
                ("resolver", (str, Iterable), "an address or a list of addresses, e.g. '9.9.9.9'"),
                ("caps", (str, Iterable), "a list of capability names, e.g. ['net_admin']"),
                ("resolvconf", (str, os.PathLike), "the path of a resolv.conf file")):
            value = kwargs.get(key)
            if value is not None and not isinstance(value, types):
                raise ArgumentError(f"{where}: {key}={value!r} is not {want}")
        if "resolver" in kwargs:
            spec = replace(spec, resolver=tuple(parse_addresses(kwargs["resolver"])))
        if "resolvconf" in kwargs:
            spec = replace(spec, resolvconf=check_resolvconf(kwargs["resolvconf"]))
        if "sysadm" in kwargs:
            if not isinstance(kwargs["sysadm"], bool):
                raise ArgumentError(f"{where}: sysadm={kwargs['sysadm']!r} must be True or False")
            spec = replace(spec, sysadm=kwargs["sysadm"])
        if "caps" in kwargs:
            caps = kwargs["caps"]
            spec = replace(spec, caps=None if caps is None else capabilities.resolve(caps))
        if "scope" in kwargs:
            if kwargs["scope"] not in SCOPES:
                raise ArgumentError(f"{where}: scope={kwargs['scope']!r} is not one of "
                                    f"{', '.join(map(repr, SCOPES))}")
            spec = replace(spec, scope=kwargs["scope"])
        if "addr" in kwargs and kwargs["addr"] is not None:
            static = addressing.parse(kwargs["addr"], len(spec.nets))
            spec = replace(spec, addr="auto" if static is None else
                           tuple(tuple(str(i) for i in ifaces) for ifaces in static))
        if "mac" in kwargs and kwargs["mac"] is not None:
            macs = addressing.parse_mac(kwargs["mac"], len(spec.nets)) or []
            spec = replace(spec, mac=tuple(m.hex(":") for m in macs))
        if "capture" in kwargs and kwargs["capture"] is not None:
            if kwargs["capture"] not in CAPTURE:
                raise ArgumentError(f"{where}: capture={kwargs['capture']!r} is not one of "
                                    f"{', '.join(map(repr, CAPTURE))}")
            spec = replace(spec, capture=kwargs["capture"])
        if "isolate" in kwargs:
            if not isinstance(kwargs["isolate"], bool):
                raise ArgumentError(f"{where}: isolate={kwargs['isolate']!r} must be True or False")
            if not kwargs["isolate"] and len(kwargs) > 1:
                others = ", ".join(sorted(set(kwargs) - {"isolate"}))
                raise ArgumentError(f"{where}: isolate=False runs the test outside any namespace, "
                                    f"so {others} would be ignored; drop them or isolate=False")
            spec = replace(spec, isolate=kwargs["isolate"])
        return spec

    def make(self, default_url: str, seed: str = "") -> Namespace:
        """The namespace; without mac=, MACs derive from `seed` (e.g. the test's id),
        so a test's captures are the same from run to run."""
        nets = [default_url if n is None else n for n in self.nets]
        mac = self.mac or ([stable_mac(f"{seed}/{i}") for i in range(len(nets))] if seed else None)
        addr = self.addr if not isinstance(self.addr, tuple) else [list(a) for a in self.addr]
        return Namespace(nets, iface=self.iface, resolver=list(self.resolver) or None,
                         resolvconf=self.resolvconf, sysadm=self.sysadm, caps=self.caps,
                         addr=addr, mac=list(mac) if mac else None, capture=self.capture != "no")


def stable_mac(seed: str) -> str:
    """A locally administered unicast MAC that depends only on `seed`."""
    raw = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFC) | 0x02
    return raw.hex(":")


class State:
    """Per-process plugin state: options, and what lives for the whole session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.switches: list[str] = _option(config, "vdens_switch") or []
        capture = _option(config, "vdens_capture") or "on-failure"
        if capture not in CAPTURE:
            raise pytest.UsageError(f"vdens_capture = {capture!r}: use {', '.join(CAPTURE)}")
        self.capture_dir: str | None = _option(config, "vdens_capture_dir") or None
        self.base = Spec(iface=_option(config, "vdens_iface") or "vde",
                         resolver=tuple(parse_addresses(_option(config, "vdens_resolver") or None)),
                         capture=capture)
        # each namespace's label in reports ("ns0"...) and capture mode
        self.meta: WeakKeyDictionary[Namespace, tuple[str, str]] = WeakKeyDictionary()
        self.session_kept: dict[Namespace, Path] = {}  # session namespaces a failed test used
        self.isolate = bool(_option(config, "vdens_isolate"))
        self.unavailable = _option(config, "vdens_unavailable") or "fail"
        if self.unavailable not in ("fail", "skip"):
            raise pytest.UsageError(f"--vdens-unavailable={self.unavailable!r}: use fail or skip")
        self.session_switch: Switch | None = None
        self.session_spaces: dict[tuple[Spec, str], Namespace] = {}
        self.reported: dict[tuple[int, int], set[str]] = {}  # dead networks already reported

    def session_url(self) -> str:
        """Default network of session-scoped namespaces: one switch per worker."""
        if self.switches:
            return self.switches[0]
        if self.session_switch is None:
            self.session_switch = Switch()
        return self.session_switch.url

    def session_namespace(self, spec: Spec, url: str) -> Namespace:
        # vdens(scope="session") tests run in vdens_session_ns's namespace
        key = (replace(spec, scope="session"), url)
        if key not in self.session_spaces:
            ns = self.guard(lambda: spec.make(url))
            self.meta[ns] = (f"session{len(self.session_spaces)}", spec.capture)
            self.session_spaces[key] = ns
        return self.session_spaces[key]

    def guard(self, make: Callable[[], Any]) -> Any:
        """make(), turning 'this machine cannot do namespaces' into a skip if asked to."""
        try:
            return make()
        except Unavailable as e:
            if self.unavailable == "skip":
                pytest.skip(f"pytest-vdens: {e}")
            raise

    def close(self) -> None:
        inside.reap(block=True)  # else closing their namespaces would wait for us
        for ns in self.session_spaces.values():
            label, mode = self.meta.get(ns, ("", "no"))
            where = self.session_kept.get(ns)
            if where is None and mode == "always":
                where = self.capture_base("session")
            ns.close(keep_captures=where / label if where else None)
        self.session_spaces.clear()
        if self.session_switch is not None:
            self.session_switch.close()

    def capture_base(self, name: str) -> Path:
        """A new directory for captures: under --vdens-capture-dir, else in basetemp."""
        if self.capture_dir:
            worker = os.environ.get("PYTEST_XDIST_WORKER")
            name = f"{name}-{worker}" if worker and name == "session" else name
            return Path(self.capture_dir).absolute() / re.sub(r"[^\w.=-]+", "_", name)[-150:]
        factory: pytest.TempPathFactory = self.config._tmp_path_factory  # type: ignore[attr-defined]
        return factory.mktemp(re.sub(r"\W", "_", name)[:30], numbered=True) / "vdens-capture"


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name)
    return value if value is not None else config.getini(name)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vdens", "private network namespaces (pytest-vdens)")
    # next to --markers and --fixtures: it reports and exits, and has no ini key
    parser.getgroup("general").addoption(
        "--vdens-doctor", action="store_true", dest="vdens_doctor",
        help="pytest-vdens: check this machine (user namespaces, /dev/net/tun, libvdeplug and "
             "its plugins, python-prctl, vde_plug), print each problem with its fix, and exit "
             "(1 when a basic item is missing)")
    group.addoption("--vdens-switch", action="append", dest="vdens_switch", metavar="URL",
                    help="VDE network for the tests' default interface (repeat it to run the "
                         "vdens tests against each). Default: an embedded switch per test.")
    group.addoption("--vdens-iface", dest="vdens_iface", metavar="PREFIX",
                    help="interface name prefix (default: vde)")
    group.addoption("--vdens-resolver", dest="vdens_resolver", metavar="ADDRS",
                    help="DNS servers for /etc/resolv.conf inside, e.g. 10.0.0.53,fd00::53")
    group.addoption("--vdens-unavailable", dest="vdens_unavailable", choices=("fail", "skip"),
                    help="when this machine cannot make namespaces (no user namespaces, no "
                         "/dev/net/tun): fail (default) or skip the tests that need them")
    group.addoption("--vdens-capture", dest="vdens_capture", choices=CAPTURE,
                    help="record each namespace interface's frames to pcap: no, on-failure "
                         "(default: kept for failed tests and summarized in their report) or "
                         "always")
    group.addoption("--vdens-capture-dir", dest="vdens_capture_dir", metavar="DIR",
                    help="keep captures in DIR/<test id>/ instead of the test's directory in "
                         "pytest's basetemp")
    group.addoption("--vdens-isolate", action="store_true", default=None, dest="vdens_isolate",
                    help="run every unmarked test as if marked vdens(nets='no'): in a network "
                         "namespace of its own, with its own loopback and ports. Tests marked "
                         "vdens(isolate=False) or using the vdens fixtures stay outside.")
    parser.addini("vdens_switch", "default VDE network URLs, one per line", type="linelist")
    parser.addini("vdens_iface", "interface name prefix (default: vde)")
    parser.addini("vdens_resolver", "DNS servers for /etc/resolv.conf inside")
    parser.addini("vdens_unavailable", "fail or skip when namespaces are unavailable")
    parser.addini("vdens_capture", "no, on-failure (default) or always: see --vdens-capture")
    parser.addini("vdens_capture_dir", "where to keep captures: see --vdens-capture-dir")
    parser.addini("vdens_isolate", "run every unmarked test in a network namespace of its own "
                  "(like --vdens-isolate)", type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    try:
        config.stash[_STATE] = State(config)
    except VdensError as e:
        raise pytest.UsageError(f"pytest-vdens: {e}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.close()


def _switch_id(url: str) -> str:
    scheme, _, rest = url.rpartition("://")
    tail = rest.rstrip("/").rsplit("/", 1)[-1] or rest
    return re.sub(r"[^\w.:-]+", "_", f"{scheme or 'vde'}-{tail}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    urls = metafunc.config.stash[_STATE].switches
    marker = metafunc.definition.get_closest_marker("vdens")
    # isolated tests have no interface: nothing to run against each switch
    marked = marker is not None and not _opted_out(marker)
    if len(urls) > 1 and (marked or any(f in metafunc.fixturenames for f in FIXTURES)):
        if "vdens_switch" not in metafunc.fixturenames:
            metafunc.fixturenames.append("vdens_switch")
        ids = [_switch_id(u) for u in urls]
        ids = [i if ids.count(i) == 1 else f"{i}{n}" for n, i in enumerate(ids)]
        metafunc.parametrize("vdens_switch", urls, ids=ids, indirect=True)


# -- tests that run inside --------------------------------------------------------------


_ISOLATED = pytest.mark.vdens(nets="no").mark


def _opted_out(marker: pytest.Mark) -> bool:
    # with other arguments, Spec.parse reports the mistake as the test's error
    return not marker.args and marker.kwargs == {"isolate": False}


def _inside_marker(item: pytest.Item) -> pytest.Mark | None:
    """The vdens marker `item` runs inside with (--vdens-isolate's if unmarked), or None."""
    marker = item.get_closest_marker("vdens")
    if marker is not None:
        return None if _opted_out(marker) else marker
    if (item.config.stash[_STATE].isolate and isinstance(item, pytest.Function)
            and not any(f in item.fixturenames for f in OUTSIDE_FIXTURES)):
        return _ISOLATED
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    marker = _inside_marker(item)
    if marker is None or evaluate_skip_marks(item) is not None:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in _run_marked(item, nextitem, marker):
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _run_marked(item: pytest.Item, nextitem: pytest.Item | None,
                marker: pytest.Mark) -> list[pytest.TestReport]:
    state = item.config.stash[_STATE]
    made: list[Namespace | Switch] = []  # ours to close after the test

    def prepare() -> Namespace:
        try:
            return make()
        except VdensError as e:
            error = e
        pytest.fail(f"pytest-vdens: {error}", pytrace=False)

    def make() -> Namespace:
        spec = Spec.parse(state.base, "@pytest.mark.vdens", marker.args, dict(marker.kwargs))
        inside.setup_wider_fixtures(item)
        # tmp_path's base directory, made on first use: else each child makes (and leaves) its own
        factory = getattr(item.config, "_tmp_path_factory", None)
        if factory is not None:
            factory.getbasetemp()
        url = _param_url(item)
        if spec.scope == "session":
            return state.session_namespace(spec, url or state.session_url())
        url = url or (state.switches[0] if state.switches else "")
        uses_default = None in spec.nets or any(f in item.fixturenames for f in FIXTURES)  # type: ignore[attr-defined]
        if not url and uses_default:
            made.append(state.guard(Switch))
            url = made[-1].url  # type: ignore[union-attr]
        item.stash[_SWITCH] = url
        ns: Namespace = state.guard(lambda: spec.make(url, seed=item.nodeid))
        _made(item, ns, spec)
        made.append(ns)
        return ns

    spaces: list[Namespace] = []
    failed = inside.report_error(item, "setup", lambda: spaces.append(prepare()))
    try:
        if failed is not None:
            reports = [failed]
        else:
            item.stash[_ACTIVE] = spaces[0]
            reports = inside.run(item, nextitem, spaces[0], item.stash.get(_TIMEOUT, None))
            _flag_dead_networks(state, [spaces[0]], reports)
            failed = next((r for r in reports if r.failed and r.when != "teardown"), None)
            if failed is not None:  # the child gave the state, unless it died first
                _diagnose(item, failed, spaces, not any(
                    title == "vdens network state" for r in reports for title, _ in r.sections))
    finally:
        for thing in reversed(made):
            if isinstance(thing, Namespace):
                _close(item, thing)
            else:
                thing.close(wait=False)
        if _ACTIVE in item.stash:
            del item.stash[_ACTIVE]
    # the item's wider fixtures and collectors are ours to tear down
    teardown = inside.report_error(
        item, "teardown", lambda: item.session._setupstate.teardown_exact(nextitem))
    if teardown is not None:
        reports = [r for r in reports if not (r.when == "teardown" and r.passed)] + [teardown]
    elif reports[-1].when != "teardown":
        reports.append(pytest.TestReport(item.nodeid, item.location, {}, "passed", None, "teardown"))
    item._request = False  # type: ignore[attr-defined]
    item.funcargs = None  # type: ignore[attr-defined]
    return reports


def _param_url(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("vdens_switch") if callspec is not None else None


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def vdens_switch(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of the VDE network that this test's namespaces join by default."""
    active = request.node.stash.get(_SWITCH, None)
    if active:
        yield active
        return
    state = request.config.stash[_STATE]
    url = getattr(request, "param", None) or (state.switches[0] if state.switches else None)
    if url:
        yield url
        return
    switch = state.guard(Switch)
    try:
        yield switch.url
    finally:
        switch.close(wait=False)


@pytest.fixture
def make_vdens_ns(request: pytest.FixtureRequest, vdens_switch: str) -> Iterator[Callable[..., Namespace]]:
    """Factory: make_vdens_ns(nets=..., iface=, resolver=, resolvconf=, sysadm=, caps=,
    addr=, mac=).

    Namespaces join this test's default network unless `nets` says otherwise
    (URLs, or networks from make_vdens_net); all of them are closed at the end
    of the test. Without mac=, MACs are stable for a given test.
    """
    state = request.config.stash[_STATE]
    made: list[Namespace] = []

    def make(*args: Any, **kwargs: Any) -> Namespace:
        if args:
            kwargs = {"nets": args[0], **kwargs}
            args = args[1:]
        if isinstance(kwargs.get("nets"), (list, tuple)):  # a network from make_vdens_net
            kwargs["nets"] = [n.url if isinstance(n, Switch) else n for n in kwargs["nets"]]
        elif isinstance(kwargs.get("nets"), Switch):
            kwargs["nets"] = [kwargs["nets"].url]
        if "isolate" in kwargs:
            raise ArgumentError("make_vdens_ns(): isolate is a marker argument; "
                                "use @pytest.mark.vdens(isolate=False)")
        spec = Spec.parse(state.base, "make_vdens_ns()", args, kwargs)
        if spec.scope != "function":
            raise ArgumentError("make_vdens_ns(): scope must be 'function'; "
                                "use vdens_session_ns for a namespace shared by the session")
        seed = f"{request.node.nodeid}#{len(made)}"
        ns: Namespace = state.guard(lambda: spec.make(vdens_switch, seed))
        _made(request.node, ns, spec)
        made.append(ns)
        _use(request, ns)
        return ns

    yield make
    for ns in made:
        _close(request.node, ns)


@pytest.fixture
def make_vdens_net(request: pytest.FixtureRequest) -> Iterator[Callable[..., Switch]]:
    """Factory: make_vdens_net(delay=, jitter=, loss=, dup=, rate=) -> an extra embedded
    switch (a Switch: pass it in make_vdens_ns(nets=[...]); .impair() changes its
    impairment, which applies to each host's link). All are closed at test end."""
    state = request.config.stash[_STATE]
    made: list[Switch] = []

    def make(**impair: Any) -> Switch:
        net: Switch = state.guard(lambda: Switch(**impair))
        made.append(net)
        return net

    yield make
    for net in reversed(made):
        net.close(wait=False)


@pytest.fixture
def vdens_ns(request: pytest.FixtureRequest, vdens_switch: str) -> Iterator[Namespace]:
    """A namespace for this test: in a marked test, the one it runs in; else from the options."""
    active = request.node.stash.get(_ACTIVE, None)
    if active is not None:
        yield active
        return
    state = request.config.stash[_STATE]
    ns = state.guard(lambda: state.base.make(vdens_switch, request.node.nodeid))
    _made(request.node, ns, state.base)
    try:
        yield _use(request, ns)
    finally:
        _close(request.node, ns)


@pytest.fixture(scope="session")
def vdens_session_ns(request: pytest.FixtureRequest) -> Namespace:
    """One namespace per worker, on the session's default network."""
    state = request.config.stash[_STATE]
    return _use(request, state.session_namespace(state.base, state.session_url()))


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return None
    where = ", ".join(state.switches) if state.switches else "an embedded switch per test"
    isolated = "; unmarked tests isolated (--vdens-isolate)" if state.isolate else ""
    try:
        ready = doctor.summary(doctor.checks())
    except Exception as e:  # a line of the header must not stop the tests
        ready = f"vdens: the environment check failed: {e!r} (run `pyvdens --doctor`)"
    return [f"vdens: default network: {where}{isolated}; worker pid {os.getpid()}", ready]


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """--vdens-doctor: the report, then exit, as --markers does."""
    if not config.getoption("vdens_doctor", False):
        return None
    found = doctor.checks()
    create_terminal_writer(config).line(doctor.report(found))
    return 0 if doctor.ready(found) else 1


# -- faults: dead networks, timeouts ------------------------------------------------------


def _use(request: pytest.FixtureRequest, ns: Namespace) -> Namespace:
    """Note that the requesting test uses `ns`: its networks are checked after the call."""
    if isinstance(request.node, pytest.Item):
        request.node.stash.setdefault(_USED, []).append(ns)
    return ns


def _flag_dead_networks(state: State, spaces: Sequence[Namespace],
                        reports: Sequence[pytest.TestReport]) -> None:
    """Fail the test (or add to its failure) if a network of its namespaces went away.

    A network that is gone stays gone: a shared namespace reports it once.
    """
    errors: list[str] = []
    for ns in spaces:
        if ns.closed:
            continue
        try:
            found = ns.errors()
        except VdensError as e:
            found = [str(e)]
        seen = state.reported.setdefault((ns._helper.pid, ns.id), set())
        errors += [e for e in found if e not in seen]
        seen.update(found)
    report = next((r for r in reports if r.when == "call"), reports[0] if reports else None)
    if not errors or report is None:
        return
    message = "pytest-vdens: a network of this test went away:\n" + "\n".join(errors)
    if report.passed and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = message
    else:
        report.sections.append(("pytest-vdens", message))


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                        pytest.TestReport]:
    report = yield
    state = item.config.stash[_STATE]
    used = list(item.stash.get(_USED, None) or ())
    if "vdens_session_ns" in getattr(item, "fixturenames", ()):  # set up once, for the session
        used += [ns for ns in state.session_spaces.values() if ns not in used]
    # a marked test's child sees the parent's namespaces, but not through its helper
    used = [ns for ns in used if ns._helper.owner == os.getpid()]
    if call.when == "call" and used:
        _flag_dead_networks(state, used, [report])
    if report.failed and call.when != "teardown":
        active = item.stash.get(_ACTIVE, None)
        if inside.in_child() and active is not None:  # live, before the test's fixtures go
            label = state.meta.get(active, ("ns0", ""))[0]
            report.sections.append(diagnose.state_here(label, active))
        if used:
            _diagnose(item, report, used)
    return report


# -- failure reports: network state and captures -------------------------------------------


def _made(item: pytest.Item, ns: Namespace, spec: Spec) -> None:
    """Label a test's namespace for its reports ("ns0", "ns1"...) and note its capture mode."""
    count = item.stash.get(_COUNT, 0)
    item.stash[_COUNT] = count + 1
    item.config.stash[_STATE].meta[ns] = (f"ns{count}", spec.capture)


def _close(item: pytest.Item, ns: Namespace) -> None:
    """Close a test's namespace, keeping its captures if the test failed (or always)."""
    label, mode = item.config.stash[_STATE].meta.get(ns, ("ns", "no"))
    keep = mode == "always" or (mode == "on-failure" and item.stash.get(_FAILED, False))
    # not waiting for the kernel to finish: the helper reaps while the next test runs
    ns.close(keep_captures=_capture_dir(item) / label if keep and ns.capture else None,
             wait=False)


def _capture_dir(item: pytest.Item) -> Path:
    """Where a test's captures are kept: in its tmp_path if it has one."""
    if _KEPT not in item.stash:
        state = item.config.stash[_STATE]
        tmp = (getattr(item, "funcargs", None) or {}).get("tmp_path")
        if tmp is not None and not state.capture_dir:
            item.stash[_KEPT] = Path(tmp) / "vdens-capture"
        else:
            item.stash[_KEPT] = state.capture_base(item.nodeid if state.capture_dir else item.name)
    return item.stash[_KEPT]


def _diagnose(item: pytest.Item, report: pytest.TestReport, spaces: Sequence[Namespace],
              with_state: bool = True) -> None:
    """A failed test: its namespaces' state and last frames go into the report."""
    item.stash[_FAILED] = True
    state = item.config.stash[_STATE]
    labelled, kept = [], {}
    for ns in spaces:
        label, mode = state.meta.get(ns, ("ns", "no"))
        labelled.append((label, ns))
        if ns.capture and mode != "no":
            if ns in state.session_spaces.values():
                if ns not in state.session_kept:  # one directory, made once
                    state.session_kept[ns] = state.capture_base("session")
                where = state.session_kept[ns]
            else:
                where = _capture_dir(item)
            kept[label] = str(where / label)
    try:
        report.sections += diagnose.sections(labelled, kept, with_state)
    except Exception as e:  # the report matters more than our part of it
        report.sections.append(("vdens network state", f"(could not gather it: {e!r})"))


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout: a test running inside gets its timeout from its child.

    pytest-timeout's own timer would fire in the parent, which only waits: its
    signal method would break pytest there, its thread method end the worker.
    """
    if inside.in_child():
        inside.arm_timeout(float(settings.timeout), settings.method)
        return True
    if _inside_marker(item) is not None and evaluate_skip_marks(item) is None:
        item.stash[_TIMEOUT] = (float(settings.timeout), settings.method)
        return True
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item: object) -> bool | None:
    if inside.in_child():
        return inside.disarm_timeout() or None
    if isinstance(item, pytest.Item) and _TIMEOUT in item.stash:
        del item.stash[_TIMEOUT]
        return True
    return None
