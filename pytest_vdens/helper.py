"""The helper process: makes namespaces, forwards their frames to VDE, cleans up.

One helper runs per Python process that uses the engine (so each xdist worker
has its own). It is started by exec, never forked from a threaded parent, and
dies with its parent. It is single-threaded: one epoll loop serves the control
socket and every tap <-> VDE pair.

Namespaces are made by forked children (see maker.py); each one's init holds
its PID namespace: when the helper closes its keeper pipe, or dies, init exits
and the kernel kills every process left in the namespace.
"""

from __future__ import annotations

import fcntl
import functools
import glob
import os
import queue
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import addressing, impairment, kernel, maker, netlink, protocol
from ._prctl import prctl
from .capture import Capture
from .errors import ArgumentError, NetworkError, Unavailable, VdensError
from .forwarding import Forwarder, Link, LocalSwitch
from .libvdeplug import VdeConn, scheme

MAX_INTERFACES = protocol.MAX_FDS - 8  # taps, netlink and namespace fds in one message


@dataclass(eq=False)
class Netns:
    """An open namespace: what its maker made, and its links."""

    id: int
    made: maker.Made
    links: list[Link] = field(default_factory=list)


class Helper:
    """The helper's state and request handlers."""

    def __init__(self, ctl: socket.socket, parent: int) -> None:
        self.fwd = Forwarder()  # first: without libvdeplug, fail before making anything
        self.ctl = ctl
        self.parent = parent
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        _remove_stale_dirs()
        self.tmpdir = tempfile.mkdtemp(prefix=f"{_PREFIX}{worker}{'-' if worker else ''}",
                                       dir=_short_tmp())
        # held while we live (even in another PID namespace); the kernel drops it if we are killed
        # locked before it is named "lock": a sweeping helper may look at any moment
        claim = os.path.join(self.tmpdir, "lock.new")
        self.lock = os.open(claim, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        os.rename(claim, os.path.join(self.tmpdir, "lock"))
        self.switches: dict[int, LocalSwitch] = {}
        self.spare: LocalSwitch | None = None  # made while idle, for the next switch_open
        self.default_id = 0
        self.namespaces: dict[int, Netns] = {}
        self.networks: dict[str, addressing.Network] = {}
        self.networks_made = 0  # numbers each embedded network's subnets
        self.next_id = 1
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.later: list[Callable[[], None]] = []  # work for when nothing else waits
        self.dying: dict[int, maker.Made] = {}  # killed namespaces' inits, not reaped yet
        self.captures: list[Capture] = []
        self.pool = maker.Pool(self.watch, self.unwatch)
        self.closer = Closer()
        self.alarm, self.alarmed = -1, False
        self.watch(ctl.fileno(), self.on_request)
        # a signal only stops the loop between two handlers: raised anywhere, it could
        # lose the zygote's answer to a clone, and shutdown would wait for it forever
        self.woken, woke = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(woke, warn_on_full_buffer=False)
        self.watch(self.woken, self.on_signal)

    def on_signal(self, events: int) -> None:
        try:
            os.read(self.woken, 4096)
        except BlockingIOError:
            pass

    def watch(self, fd: int, handler: Callable[[int], None]) -> None:
        self.ep.register(fd, select.EPOLLIN)
        self.handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def serve(self) -> None:
        alarm, self.alarm = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        protocol.send(self.ctl, {"ok": True, "pid": os.getpid(), "tmpdir": self.tmpdir}, [alarm])
        os.close(alarm)
        self.running = True
        while self.running:
            self.turn(1.0)
            if os.getppid() != self.parent:
                break

    def turn(self, timeout: float) -> None:
        """One round of the event loop: requests and frames first, then deferred work."""
        # recorded frames reach their files once the traffic pauses
        ready = self.ep.poll(0 if self.later else min(timeout, 0.05) if self.captures else timeout)
        if not ready:
            for cap in self.captures:
                cap.flush()
            if self.later:
                self.later.pop(0)()
        for fd, events in ready:
            handler = self.handlers.get(fd)
            if handler is not None:
                handler(events)

    def on_request(self, events: int) -> None:
        try:
            req, fds = protocol.recv(self.ctl)
        except protocol.TooLong as e:
            req, fds = {"op": "too_long", "why": str(e)}, []
        except (EOFError, OSError):
            self.running = False
            return
        for fd in fds:
            os.close(fd)
        reply: dict[str, Any]
        out: list[int] = []
        try:
            reply, out = getattr(self, "op_" + req["op"])(req)
        except VdensError as e:
            reply = {"ok": False, "error": type(e).__name__, "message": str(e)}
        except Exception as e:
            reply = {"ok": False, "error": "HelperError",
                     "message": f"helper failed on {req.get('op')!r}: {e!r}\n{traceback.format_exc()}"}
        try:
            try:
                protocol.send(self.ctl, reply, out)
            except protocol.TooLong:  # e.g. an error quoting a huge URL: cut it
                protocol.send(self.ctl, {"ok": False, "error": reply.get("error", "HelperError"),
                                         "message": str(reply.get("message", ""))[:2000] + "..."})
        except OSError:
            self.running = False
        finally:
            for fd in out:
                os.close(fd)

    # -- requests -------------------------------------------------------------

    def op_too_long(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        raise ArgumentError(f"a request too large to read ({req['why']}); nothing was done")

    def op_default_switch(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        return {"ok": True, "url": self.default_switch()}, []

    def op_open(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        prefix = req["iface"]
        kernel.check_ifname_prefix(prefix, len(req["nets"]))
        if len(req["nets"]) > MAX_INTERFACES:
            raise ArgumentError(f"{len(req['nets'])} networks: a namespace has at most "
                                f"{MAX_INTERFACES} interfaces (their fds travel in one message)")
        for url in req["nets"]:
            if url is not None and "\0" in url:
                raise NetworkError(f"cannot open VDE network {url!r}: it contains a NUL byte")
        urls = [self.default_switch() if u is None else u for u in req["nets"]]
        ifnames = [f"{prefix}{i}" for i in range(len(urls))]
        spec = {"ifnames": ifnames, "mnt": req["mnt"], "resolver": req["resolver"],
                "resolvconf": req["resolvconf"]}
        links: list[Link] = []
        try:
            for name, url in zip(ifnames, urls, strict=True):
                links.append(self.connect(name, url))
            made = self.pool.take(spec)
        except BaseException:
            for link in links:
                if link.conn is not None:
                    link.conn.close()
            raise
        for link, tap in zip(links, made.taps, strict=True):
            link.tap = tap
            self.plug(link)
        ns = Netns(self.next_id, made, links)
        self.next_id += 1
        self.namespaces[ns.id] = ns
        if req.get("capture"):
            for link in links:
                link.capture = Capture(os.path.join(self.tmpdir, f"cap{ns.id}-{link.ifname}.pcap"))
                self.captures.append(link.capture)
        self.later.append(lambda: self.pool.refill(spec))  # the next test's, while this one runs
        try:
            addresses = self.address(ns, req.get("addr"), req.get("mac"))
            for link in links:
                if link.network is not None and link.network.impair:
                    self.impair(link, link.network.impair)
        except BaseException as e:
            self.namespaces.pop(ns.id)
            self.destroy(ns)
            self.keep_captures(ns, None)
            for fd in made.nsfds:  # never sent
                os.close(fd)
            if isinstance(e, OSError):  # the kernel refused an address or a MAC
                raise ArgumentError(f"addr={req.get('addr')!r}, mac={req.get('mac')!r}: "
                                    f"the kernel refused them ({e.strerror})") from None
            raise
        return ({"ok": True, "id": ns.id, "interfaces": ifnames, "nets": urls,
                 "init": made.init_pid, "nsnames": made.nsnames, "addresses": addresses,
                 "captures": {lk.ifname: lk.capture.path for lk in links if lk.capture}},
                made.nsfds)

    def address(self, ns: Netns, addr: Any, macs: list[str] | None) -> dict[str, list[str]]:
        """Give the interfaces their MACs and addresses (static or "auto"), and bring them up."""
        out: dict[str, list[str]] = {}
        if addr is None and macs is None:
            return out
        nl, made = ns.made.netlink, ns.made
        static = None if addr in (None, "auto") else addressing.parse(addr, len(ns.links))
        for i, link in enumerate(ns.links):
            net = self.network(link)
            ifaces: list[addressing.Interface] = []
            gateway = None
            if static is not None:
                for iface in static[i]:
                    net.claim_static(iface, ns.id)
                ifaces = static[i]
            elif addr == "auto" and link.url.startswith("slirp://"):
                ifaces, gateway = [addressing.SLIRP[0]], addressing.SLIRP[1]
            elif addr == "auto":
                ifaces = net.claim_auto(ns.id)
            mac = bytes.fromhex(macs[i]) if macs else None
            if mac is not None:
                netlink.request(nl, netlink.link_up(made.indexes[i], mac, up=False))
            for iface in ifaces:
                netlink.request(nl, netlink.add_address(made.indexes[i], iface))
            if addr is not None:
                netlink.request(nl, netlink.link_up(made.indexes[i]))
            if gateway is not None:
                netlink.request(nl, netlink.add_default_route(made.indexes[i], gateway))
            out[link.ifname] = [str(iface) for iface in ifaces]
        return out

    def network(self, link: Link) -> addressing.Network:
        net = self.networks.get(link.url)
        if net is None:
            net = addressing.Network(link.url, self.networks_made, shared=link.switch is None)
            self.networks_made += 1
            self.networks[link.url] = net
        return net

    def op_close(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Close one namespace (id, keeping its captures if asked) or many (ids)."""
        ids = req["ids"] if "ids" in req else [req["id"]]
        spaces = [ns for i in ids if (ns := self.namespaces.pop(i, None)) is not None]
        self.end(spaces, wait=req.get("wait", True))
        keep = req.get("keep") if len(ids) == 1 else None
        kept: dict[str, str] = {}
        for ns in spaces:
            kept = self.keep_captures(ns, keep)
        return {"ok": True, "kept": kept}, []

    def end(self, spaces: list[Netns], wait: bool) -> None:
        """Destroy namespaces, all killed first: the kernel tears them down side by side."""
        for ns in spaces:
            signal.pidfd_send_signal(ns.made.init_pidfd, signal.SIGKILL)
        for ns in spaces:
            self.destroy(ns, wait)

    def keep_captures(self, ns: Netns, where: str | None) -> dict[str, str]:
        """Move a closed namespace's captures to `where` (as IFNAME.pcap), or delete them."""
        caps = [link.capture for link in ns.links if link.capture is not None]
        kept: dict[str, str] = {}
        try:
            if where is not None and caps:
                os.makedirs(where, exist_ok=True)
                for link in ns.links:
                    if link.capture is not None:
                        kept[link.ifname] = os.path.join(where, f"{link.ifname}.pcap")
                        link.capture.keep(kept[link.ifname])
        except OSError as e:
            raise ArgumentError(f"cannot keep the captures in {where!r}: {e.strerror}; "
                                "give a writable directory (--vdens-capture-dir)") from None
        finally:
            for cap in caps:
                cap.discard()
        return kept

    def op_flush(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Write out what a namespace's captures recorded so far."""
        ns = self.namespaces.get(req["id"])
        for link in ns.links if ns is not None else []:
            if link.capture is not None:
                link.capture.flush(make=True)
        return {"ok": True}, []

    def op_status(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        ns = self.namespaces.get(req["id"])
        if ns is None:
            return {"ok": True, "open": False, "errors": []}, []
        return {"ok": True, "open": True,
                "errors": [link.error for link in ns.links if link.error]}, []

    # -- namespaces -----------------------------------------------------------

    def connect(self, ifname: str, url: str) -> Link:
        """A link for `url`: a port of our own switch if it is one, else a VDE client."""
        sw = self.local_switch(url)
        if sw is not None:
            return Link(ifname, url, -1, switch=sw, network=sw)
        return Link(ifname, url, -1, conn=VdeConn(url))

    def plug(self, link: Link) -> None:
        """Start forwarding for a link whose tap is ready."""
        if link.switch is not None:
            link.switch.ports.append(link)
            self.watch(link.tap, lambda ev: self.fwd.tap_to_switch(link))
            return
        assert link.conn is not None
        link.datafd = link.conn.datafd
        link.ctlfd = link.conn.ctlfd
        os.set_blocking(link.datafd, False)
        self.watch(link.tap, lambda ev: self.fwd.tap_to_vde(link))
        self.watch(link.datafd, lambda ev: self.on_data(link, ev))
        if link.ctlfd >= 0:
            os.set_blocking(link.ctlfd, False)
            self.watch(link.ctlfd, lambda ev: self.on_ctl(link))

    def on_data(self, link: Link, events: int) -> None:
        if events & (select.EPOLLERR | select.EPOLLHUP):
            self.disconnect(link, "its data connection failed")
        else:
            self.fwd.vde_to_tap(link)

    def on_ctl(self, link: Link) -> None:
        try:
            if os.read(link.ctlfd, 4096):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self.disconnect(link, "the switch closed its control connection")

    def disconnect(self, link: Link, why: str) -> None:
        link.error = f"VDE network {link.url!r} of {link.ifname} went away: {why}"
        if not self.alarmed:  # clients ask for errors only once this is readable
            os.write(self.alarm, b"!")
            self.alarmed = True
        for fd in (link.tap, link.datafd, link.ctlfd):
            self.unwatch(fd)
        try:
            kernel.set_carrier(link.tap, False)
        except OSError:
            pass

    def op_impair(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        ns = self.namespaces[req["id"]]
        link = next((lk for lk in ns.links if lk.ifname == req["iface"]), None)
        if link is None:
            raise ArgumentError(f"{req['iface']!r} is not an interface of this namespace "
                                f"({', '.join(lk.ifname for lk in ns.links) or 'it has none'})")
        impairment.commands(req["params"])  # refuse bad values before changing anything
        self.impair(link, req["params"])
        return {"ok": True}, []

    def impair(self, link: Link, params: dict[str, object]) -> None:
        if link.filter is None:
            self.insert_filter(link)
        assert link.filter is not None
        link.filter.set(params)

    def insert_filter(self, link: Link) -> None:
        """Put a wirefilter between the link's tap and its network."""
        if link.switch is not None:
            network = link.switch.path
        elif link.conn is not None and scheme(link.url) == "vde" and link.url.split("://")[-1]:
            network = link.url.split("://")[-1]
        else:
            raise ArgumentError(f"impairment needs a vde:// network (a switch directory); "
                                f"{link.ifname} is on {link.url!r}")
        for fd in (link.tap, link.datafd, link.ctlfd):
            self.unwatch(fd)
        if link.switch is not None:
            link.switch.detach(link)
        if link.conn is not None:
            link.conn.close()
            link.conn = None
        link.switch = self.new_switch()
        self.plug(link)
        link.filter = impairment.WireFilter(
            link.switch.path, network, os.path.join(self.tmpdir, f"wf{self.next_id}"),
            serve=lambda: self.turn(0.01))

    def destroy(self, ns: Netns, wait: bool = True) -> None:
        for link in ns.links:
            for fd in (link.tap, link.datafd, link.ctlfd):
                self.unwatch(fd)
            if link.filter is not None:
                link.filter.close()
                assert link.switch is not None
                private = link.switch
                private.detach(link)
                self.switches = {k: v for k, v in self.switches.items() if v is not private}
                self.close_switch(private, wait)
            if link.conn is not None:
                link.conn.close()
            if link.switch is not None and link in link.switch.ports:
                link.switch.detach(link)
            # persistent: the kernel deletes it with the netns
            self.close_later(functools.partial(os.close, link.tap), wait)
            if link.capture is not None:
                link.capture.close()
                self.captures.remove(link.capture)
        made = ns.made
        made.end(wait)
        if not wait:  # reaped when it is gone: the caller need not wait for that
            self.dying[made.init_pidfd] = made
            self.watch(made.init_pidfd, lambda ev: self.reap(made))
        for url in {link.url for link in ns.links}:  # not every network: a suite makes thousands
            net = self.networks.get(url)
            if net is not None:
                net.release(ns.id)

    def op_drain(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Discard the namespaces made ahead (a leak check counts what is left)."""
        self.later.clear()  # only refills wait there
        self.pool.close()
        self.close_spare()
        return {"ok": True}, []

    def op_settle(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Return once every namespace closed without waiting is gone (at most 10 s)."""
        deadline = time.monotonic() + 10
        while self.dying and time.monotonic() < deadline:
            self.turn(0.05)
        self.closer.flush()
        return {"ok": True, "dying": len(self.dying)}, []

    def reap(self, made: maker.Made) -> None:
        self.unwatch(made.init_pidfd)
        del self.dying[made.init_pidfd]
        made.reap()

    # -- embedded switches ----------------------------------------------------

    def op_switch_open(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        params = req.get("impair") or {}
        impairment.commands(params)
        sw = self.new_switch()
        sw.impair = params
        self.later.append(self.make_spare)  # a test's switch: the next test will want one
        return {"ok": True, "id": self.next_id - 1, "url": sw.url}, []

    def make_spare(self) -> None:
        if self.spare is None:
            self.spare = self.fresh_switch()

    def op_switch_impair(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Change the impairment of every host link on an embedded switch."""
        impairment.commands(req["params"])
        sw = self.switches[req["id"]]
        sw.impair = req["params"]
        for ns in self.namespaces.values():
            for link in ns.links:
                if link.network is sw:
                    self.impair(link, sw.impair)
        return {"ok": True}, []

    def op_switch_close(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        sw = self.switches.pop(req["id"], None)
        if sw is not None:
            self.close_switch(sw, req.get("wait", True))
        return {"ok": True}, []

    def new_switch(self) -> LocalSwitch:
        """A switch of our own: the one made ahead if there is one."""
        sw, self.spare = self.spare or self.fresh_switch(), None
        fd = sw.conn.datafd
        self.watch(fd, lambda ev: self.fwd.switch_to_taps(sw))
        self.switches[self.next_id] = sw
        self.next_id += 1
        return sw

    def fresh_switch(self) -> LocalSwitch:
        """A libvdeplug switch in a directory of its own, not yet one of ours."""
        sw = LocalSwitch(os.path.join(self.tmpdir, f"sw{self.next_id}"))
        self.next_id += 1
        return sw

    def close_later(self, close: Callable[[], object], wait: bool) -> None:
        """close() now if the client waits for it to be done, else in the closer."""
        if wait:
            close()
        else:
            self.closer.put(close)

    def close_switch(self, sw: LocalSwitch, wait: bool = True) -> None:
        """Unplug its remaining local ports (their namespaces see no carrier) and close it."""
        for link in list(sw.ports):
            self.disconnect(link, "its embedded switch was closed")
            sw.detach(link)
        self.unwatch(sw.conn.datafd)
        self.networks.pop(sw.url, None)
        self.close_later(sw.close, wait)

    def close_spare(self) -> None:
        if self.spare is not None:
            self.spare.close()
            self.spare = None

    def local_switch(self, url: str) -> LocalSwitch | None:
        path = url[len("vde://"):] if url.startswith("vde://") else url
        if "://" in path or not path:
            return None
        real = os.path.realpath(path)
        return next((sw for sw in self.switches.values() if sw.path == real), None)

    def default_switch(self) -> str:
        """vde:// URL of this helper's default switch, made on first use."""
        sw = self.switches.get(self.default_id)
        if sw is None:
            sw = self.new_switch()
            self.default_id = self.next_id - 1
        return sw.url

    def shutdown(self) -> None:
        try:
            self.end(list(self.namespaces.values()), wait=True)
            self.namespaces.clear()
            for made in list(self.dying.values()):
                self.unwatch(made.init_pidfd)
                made.reap()
            self.pool.shutdown()
            self.close_spare()
            for sw in self.switches.values():
                self.close_switch(sw)
            self.closer.stop()
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


class Closer:
    """A thread for the closes that wait on the kernel, off the loop that serves requests.

    Closing a tap waits for an RCU grace period (the kernel detaches its queue),
    and closing a switch for its sockets': 0.15-0.3 ms each, once per test.
    """

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.run, name="vdens-closer", daemon=True)
        self.thread.start()

    def put(self, job: Callable[[], object]) -> None:
        self.jobs.put(job)

    def run(self) -> None:
        # signals are the serving loop's: a parent's death (PDEATHSIG) must wake it at once
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while (job := self.jobs.get()) is not None:
            try:
                job()
            except OSError:
                pass

    def flush(self) -> None:
        """Return once every close asked for so far is done."""
        done = threading.Event()
        self.jobs.put(done.set)
        done.wait()

    def stop(self) -> None:
        """Return once every close asked for is done."""
        self.jobs.put(None)
        self.thread.join()


_PREFIX = "pytest-vdens-"


def _short_tmp() -> str:
    """$TMPDIR, or /tmp when sockets in it would pass sun_path's 108 bytes."""
    base = tempfile.gettempdir()
    if len(base) <= 60:
        return base
    if os.access("/tmp", os.W_OK | os.X_OK):
        return "/tmp"
    raise Unavailable(f"TMPDIR {base!r} is too long for VDE sockets (108 bytes with their "
                      "names), and /tmp is not writable: set TMPDIR to a short path")


def _remove_stale_dirs() -> None:
    """Remove what helpers killed with SIGKILL left behind: dirs whose lock nobody holds."""
    for path in glob.glob(os.path.join(_short_tmp(), _PREFIX + "*")):
        try:
            if os.lstat(path).st_uid != os.geteuid():
                continue
            fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # not a helper's, or one being made
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its helper lives
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    fd, parent = int(args[0]), int(args[1])
    ctl = socket.socket(fileno=fd)
    try:
        prctl.set_name("vdens-helper")
        # SIGTERM, not SIGKILL: PDEATHSIG also fires when only the parent *thread*
        # that started us exits, so we check that the parent process is really gone.
        prctl.set_pdeathsig(signal.SIGTERM)

        def on_term(signum: int, frame: object) -> None:
            if os.getppid() != parent and helper is not None:
                helper.running = False

        helper: Helper | None = None
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        prctl.set_child_subreaper(True)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # ~4 fds a namespace
        if os.getppid() != parent:
            return
        helper = Helper(ctl, parent)
    except VdensError as e:  # this machine lacks python-prctl or libvdeplug: the client says so
        protocol.send(ctl, {"ok": False, "error": type(e).__name__, "message": str(e)})
        return
    try:
        helper.serve()
    finally:
        helper.shutdown()


if __name__ == "__main__":
    main()
