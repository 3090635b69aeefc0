"""The Namespace handle: run commands and Python code inside a private network stack."""

from __future__ import annotations

import os
import pickle
import resource
import signal
import socket as _socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, TypeVar

from . import addressing, capabilities, client, impairment, kernel
from ._prctl import prctl
from .errors import ArgumentError, CallCrashed, NamespaceClosed, RemoteTraceback, VdensError
from .libvdeplug import is_no_network
from .resolver import check_resolvconf, parse_addresses

T = TypeVar("T")

_NSTYPES = {"user": kernel.CLONE_NEWUSER, "net": kernel.CLONE_NEWNET,
            "mnt": kernel.CLONE_NEWNS, "pid_for_children": kernel.CLONE_NEWPID}
_JOIN_ORDER = ("user", "net", "mnt", "pid_for_children")

Nets = str | Sequence[str | None] | None


def normalize_nets(nets: Nets) -> list[str | None]:
    """A list of URLs (None: the embedded switch) from what a user may write."""
    if nets is None:
        return [None]
    if isinstance(nets, str):
        return [] if is_no_network(nets) else [nets]
    if not isinstance(nets, Iterable):
        raise ArgumentError(f"nets={nets!r} is not a list of VDE URLs; "
                            "write e.g. nets=['vde:///tmp/sw'] or nets='-' for none")
    out: list[str | None] = []
    for url in nets:
        if url is not None and not isinstance(url, str):
            raise ArgumentError(f"network {url!r} in nets is not a string; "
                                "write a libvdeplug URL such as 'vde:///tmp/sw'")
        out.append(url)
    if any(u is not None and is_no_network(u) for u in out):
        if len(out) > 1:
            raise ArgumentError(f"nets={nets!r} mixes '-'/'no' (no interface) with networks; "
                                "drop the '-' or the networks")
        return []
    return out


def _family(host: object) -> int:
    return _socket.AF_INET6 if isinstance(host, str) and ":" in host else _socket.AF_INET


def describe_status(status: int) -> str:
    """'killed by SIGSEGV' or 'exited with status 3', from a waitpid status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Namespace:
    """A private user+network namespace wired to VDE networks.

    `nets` lists libvdeplug URLs, one interface each (`vde0`, `vde1`, ...);
    None (the default) means this process's embedded switch, and "-" or "no"
    means no interface. Code and commands inside get `caps` (vdens's set by
    default), scoped to the namespace. `addr` gives each interface addresses
    (one CIDR, or a list, per interface) or "auto" (a unique IPv4 and IPv6
    ULA per network; slirp's usual 10.0.2.15/24, its gateway and DNS on a
    slirp:// interface) and brings it up; `mac` sets MACs. With `capture`,
    the helper records each interface's frames in a pcap file (`captures`).
    """

    def __init__(self, nets: Nets = None, *, iface: str = "vde",
                 resolver: str | Iterable[str] | None = None,
                 resolvconf: str | os.PathLike[str] | None = None,
                 sysadm: bool = False, caps: Iterable[str] | None = None,
                 addr: str | Sequence[str | Sequence[str]] | None = None,
                 mac: str | Sequence[str] | None = None, capture: bool = False) -> None:
        urls = normalize_nets(nets)
        if not isinstance(iface, str):
            raise ArgumentError(f"iface={iface!r} is not a string; use e.g. 'vde' or 'eth'")
        self.caps = capabilities.resolve(caps, sysadm)
        static = None if addr is None else addressing.parse(addr, len(urls))
        macs = addressing.parse_mac(mac, len(urls))
        if addr == "auto" and resolver is None and resolvconf is None and any(
                u is not None and u.startswith("slirp://") for u in urls):
            resolver = [str(addressing.SLIRP[2])]  # slirp's DNS
        addrs = parse_addresses(resolver)
        conf = None if addrs else check_resolvconf(resolvconf)
        self._helper = client.helper()
        reply, fds = self._helper.request(
            "open", nets=urls, iface=iface, resolver=addrs, resolvconf=conf,
            mnt=bool(addrs or conf or sysadm),
            addr=None if addr is None else
            "auto" if static is None else [[str(i) for i in ifs] for ifs in static],
            mac=None if macs is None else [m.hex() for m in macs], capture=bool(capture))
        self.id: int = reply["id"]
        #: Interface names inside, in the order of `nets`.
        self.interfaces: tuple[str, ...] = tuple(reply["interfaces"])
        #: The URL each interface is connected to (the embedded switch's resolved).
        self.nets: tuple[str, ...] = tuple(reply["nets"])
        #: PID (in this process's PID namespace) of the namespace's init.
        self.init_pid: int = reply["init"]
        #: The addresses given with addr=, per interface (CIDRs).
        self.addresses: dict[str, tuple[str, ...]] = {
            k: tuple(v) for k, v in reply["addresses"].items()}
        self._captures: dict[str, str] = dict(reply["captures"])
        #: Whether the helper records this namespace's frames (capture=True).
        self.capture = bool(self._captures)
        self._fds: dict[str, int] = dict(zip(reply["nsnames"], fds, strict=True))
        self._procs: list[subprocess.Popen[Any]] = []
        self.closed = False

    def ip(self, iface: str | None = None, version: int = 4) -> str:
        """The address (no prefix) of `iface` (default: the first interface)."""
        name = iface or (self.interfaces[0] if self.interfaces else "")
        for cidr in self.addresses.get(name, ()):
            address = cidr.split("/")[0]
            if (":" in address) == (version == 6):
                return address
        raise ArgumentError(f"{name or 'no interface'} of {self!r} has no IPv{version} address; "
                            "make the namespace with addr='auto' or addr=[...]")

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Namespace {self.id} {state} {dict(zip(self.interfaces, self.nets, strict=True))}>"

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- entering -------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise NamespaceClosed(f"{self!r} is closed; make a new Namespace")

    def _joins(self) -> tuple[list[tuple[int, int]], str | None]:
        """The namespaces to join, in order, with their CLONE_NEW* type; the cwd to keep."""
        # already inside (a marked test): re-entering a user namespace is EINVAL
        joins = [(self._fds[name], _NSTYPES[name]) for name in _JOIN_ORDER
                 if name in self._fds and not self._inside(name)]
        cwd = None
        if any(nstype == kernel.CLONE_NEWNS for _, nstype in joins):
            try:  # setns(CLONE_NEWNS) moves us to the root
                cwd = os.getcwd()
            except OSError:
                pass
        return joins, cwd

    def _join(self, caps: tuple[str, ...]) -> None:
        """Join the namespaces (the PID one for our children) and keep only `caps`."""
        joins, cwd = self._joins()
        for fd, nstype in joins:
            kernel.setns(fd, nstype)
        if cwd is not None:
            os.chdir(cwd)
        capabilities.confine(caps)

    def _inside(self, name: str = "net") -> bool:
        """Whether this process is already in our namespace of that kind."""
        return os.readlink(f"/proc/self/ns/{name}") == os.readlink(f"/proc/self/fd/{self._fds[name]}")

    def _enter(self, caps: tuple[str, ...] | None = None) -> None:
        """In a just-forked, single-threaded child: move into the namespace.

        Joining a PID namespace only applies to children, and the kernel refuses
        threads to a process whose children land in another PID namespace. So we
        fork once more: the grandchild returns, inside; this process stays as a
        relay that forwards signals and mirrors the grandchild's exit status.
        """
        self._check_open()
        self._join(self.caps if caps is None else caps)
        relay = os.getpid()
        child = os.fork()
        if child:
            _relay(child)
        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() not in (0, relay):  # the relay (0 if outside our PID ns) is gone
            os._exit(1)

    def fork(self) -> int:
        """os.fork() into the namespace: 0 in the child, which runs inside.

        The child is our own, for os.kill/os.waitpid, and dies with us. Its
        descendants are all inside and die when the namespace closes. A
        refusal to enter (the namespace's owner gone, say) is an OSError here.
        """
        self._check_open()
        joins, cwd = self._joins()
        return kernel.fork_into(joins, cwd, [capabilities.number(c) for c in self.caps],
                                capabilities.LAST_CAP)

    def _preexec(self, kw: dict[str, Any]) -> dict[str, Any]:
        """Popen keywords that start the program inside, with the caps asked for."""
        self._check_open()
        caps = None if kw.get("caps") is None else capabilities.resolve(kw["caps"])
        user_fn = kw.get("preexec_fn")

        def preexec() -> None:
            self._enter(caps)
            if user_fn is not None:
                user_fn()

        return {**{k: v for k, v in kw.items() if k != "caps"}, "preexec_fn": preexec}

    def drop_caps(self, *names: str) -> None:
        """Drop capabilities (all, if none is named), like cadrop(1).

        Programs and code started afterwards do without them, and so does the
        calling process if it runs inside this namespace (a marked test).
        """
        drop = set(capabilities.resolve(names)) if names else set(self.caps)
        self.caps = tuple(c for c in self.caps if c not in drop)
        if self._inside():
            capabilities.lower(self.caps)

    # -- commands -------------------------------------------------------------

    def run(self, argv: Any, **kw: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run() inside the namespace; `caps=[...]` overrides its capabilities."""
        return subprocess.run(argv, **self._preexec(kw))

    def popen(self, argv: Any, **kw: Any) -> subprocess.Popen[Any]:
        """subprocess.Popen() inside the namespace; killed at close() if still running.

        `caps=[...]` overrides its capabilities.
        """
        proc = _RelayedPopen(argv, **self._preexec(kw))
        self._procs = [p for p in self._procs if p.returncode is None] + [proc]
        return proc

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) in a forked child inside the namespace.

        The return value comes back pickled; an exception is re-raised here,
        with the inside traceback as its __cause__.
        """
        self._check_open()
        r, w = os.pipe()
        pid = self.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(r)
            _call_child(w, fn, args, kwargs)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if not data:
            raise CallCrashed(f"{getattr(fn, '__qualname__', fn)!r} in {self!r} died without "
                              f"returning: {describe_status(status)}")
        kind, tb, payload = pickle.loads(data)
        try:
            value = pickle.loads(payload)
        except Exception as e:
            raise VdensError(f"{getattr(fn, '__qualname__', fn)!r} inside {self!r}: its "
                             f"{'result' if kind == 'ok' else 'exception'} could not be "
                             f"unpickled ({e!r})\n{tb}") from None
        if kind == "ok":
            return value  # type: ignore[no-any-return]
        raise value from RemoteTraceback(tb)

    # -- sockets: made inside, used from here ----------------------------------

    def socket(self, family: int = _socket.AF_INET, type: int = _socket.SOCK_STREAM,
               proto: int = 0) -> _socket.socket:
        """A socket made inside, for this process (its threads, asyncio) to use.

        A socket keeps the network namespace it was made in: whatever this
        process does with it happens in the namespace's network.
        """
        mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        with mine, theirs:
            def make() -> None:
                with _socket.socket(family, type, proto) as sock:
                    _socket.send_fds(theirs, [b"s"], [sock.fileno()])

            self.call(make)
            _, fds, _, _ = _socket.recv_fds(mine, 1, 1)
        return _socket.socket(fileno=fds[0])

    def connect(self, address: tuple[Any, ...], timeout: float | None = None) -> _socket.socket:
        """A TCP connection to `address`, from inside the namespace."""
        sock = self.socket(_family(address[0]))
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def listen(self, address: tuple[Any, ...], backlog: int = 128) -> _socket.socket:
        """A TCP socket bound to `address` inside the namespace, listening."""
        sock = self.socket(_family(address[0]))
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def iproute(self) -> Any:
        """A pyroute2 IPRoute on a netlink socket made inside: links, addresses and
        routes of the namespace, read and changed from here, without root."""
        from pyroute2 import IPRoute

        sock = self.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM, _socket.NETLINK_ROUTE)
        return IPRoute(fileno=sock.detach())

    def impair(self, iface: str | None = None, **params: object) -> None:
        """Impair an interface's link: delay, jitter ('50ms' or seconds), loss, dup
        (fractions), rate ('8mbit' or bit/s); each in both directions, through
        vde2's wirefilter. Call again to change; with no values, to clear."""
        self._check_open()
        impairment.commands(params)
        name = iface or (self.interfaces[0] if self.interfaces else "")
        self._helper.request("impair", id=self.id, iface=name, params=params)

    # -- state ----------------------------------------------------------------

    @property
    def captures(self) -> dict[str, str]:
        """With capture=True: each interface's pcap file, holding every frame so far."""
        if self._captures and not self.closed and self._helper.owner == os.getpid():
            self._helper.request("flush", id=self.id)  # the helper buffers them
        return dict(self._captures)

    def errors(self) -> list[str]:
        """What went wrong on this namespace's networks (e.g. a switch that died)."""
        self._check_open()
        if not self._helper.networks_failed():
            return []
        reply, _ = self._helper.request("status", id=self.id)
        return list(reply["errors"])

    def close(self, keep_captures: str | os.PathLike[str] | None = None,
              wait: bool = True) -> dict[str, str]:
        """Kill everything inside and release the namespace; idempotent.

        Captures are deleted, or moved to the directory `keep_captures` as
        IFNAME.pcap: the kept files' paths are returned. With wait=False it
        returns at once: the helper kills everything inside before it serves
        this process's next request, and reaps it later.
        """
        if self.closed:
            return {}
        self.closed = True
        try:
            if self._helper.owner == os.getpid():
                if keep_captures is None and not wait:
                    self._helper.post("close", id=self.id, wait=False)
                    return {}
                keep = None if keep_captures is None else os.path.abspath(keep_captures)
                reply, _ = self._helper.request("close", id=self.id, keep=keep, wait=wait)
                return dict(reply["kept"])
            return {}
        finally:
            self._release()

    def _release(self) -> None:
        """Our side of closing: the namespace fds, and the relays of its programs."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        # Their programs died with the namespace; the relays follow at once.
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()


def close_all(spaces: Iterable[Namespace]) -> None:
    """Close many namespaces at once, deleting their captures; returns when all are gone.

    One request per helper kills every init before waiting for any, so the
    kernel tears them down side by side: much faster than closing a big
    topology one namespace at a time.
    """
    groups: dict[client.HelperClient, list[Namespace]] = {}
    for ns in spaces:
        if not ns.closed:
            ns.closed = True
            groups.setdefault(ns._helper, []).append(ns)
    for helper, group in groups.items():
        try:
            if helper.owner == os.getpid():
                helper.request("close", ids=[ns.id for ns in group])
        finally:
            for ns in group:
                ns._release()



def _call_child(w: int, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    """Body of Namespace.call()'s child. Never returns."""
    try:
        kind, value, tb = "ok", fn(*args, **kwargs), ""
    except BaseException as e:
        kind, value, tb = "error", e, traceback.format_exc()
    try:
        payload = pickle.dumps(value)
    except Exception as e:
        what = "result" if kind == "ok" else "exception"
        kind, tb = "error", f"{tb}(could not send the {what} back: {e!r})\n"
        payload = pickle.dumps(CallCrashed(f"unpicklable result: {e!r}"))
    try:
        with os.fdopen(w, "wb") as f:
            f.write(pickle.dumps((kind, tb, payload)))
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


_KILL_SIGNAL = signal.SIGRTMIN + 5  # asks a relay to SIGKILL its child


class _RelayedPopen(subprocess.Popen[Any]):
    """A Popen whose pid is a relay (see Namespace._enter)."""

    def send_signal(self, sig: int) -> None:
        # SIGKILL cannot be forwarded: the relay would die first and orphan
        # the program outside the namespace's reaper. Ask the relay instead.
        super().send_signal(_KILL_SIGNAL if sig == signal.SIGKILL else sig)


_RELAYED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
            signal.SIGUSR2, signal.SIGALRM, signal.SIGCONT, signal.SIGWINCH)


def _relay(child: int) -> NoReturn:
    """Stand in for `child`: forward signals to it, then exit as it did."""
    try:  # out of the terminal's group: a ^C reaches the child once, not twice
        os.setpgid(0, 0)
    except OSError:  # a session leader already
        pass
    # Hold no fd: e.g. Popen waits for EOF on its error pipe before returning.
    os.closerange(0, resource.getrlimit(resource.RLIMIT_NOFILE)[0])

    def forward(sig: int, frame: object) -> None:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass

    for relayed in _RELAYED:
        signal.signal(relayed, forward)
    signal.signal(_KILL_SIGNAL, lambda sig, frame: forward(signal.SIGKILL, frame))
    try:
        _, status = os.waitpid(child, 0)
    except ChildProcessError:  # pragma: no cover
        os._exit(1)
    if os.WIFSIGNALED(status):
        sig: int = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))
