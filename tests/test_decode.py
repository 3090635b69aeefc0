"""The pcap reader and the one-line frame decoder, on real traffic checked against tcpdump.

A decoder is pure, so nothing here needs the engine: a script in a user and
network namespace of its own (as root or not) joins it to a second network
namespace with a veth pair, sends ARP, ICMP, TCP, UDP, neighbor discovery,
fragments and a few hand-built frames (a VLAN tag, an unknown ethertype,
802.3) across, and tcpdump captures both ends. Every frame's summary line is
then checked against what `tcpdump -v -e -n -S` says of the same frame.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vdens.decode import read_pcap, summarize, summary

# As uid 0, tcpdump drops privileges to its own user, which it cannot inside a
# namespace: these tests stay outside, even under --vdens-isolate.
pytestmark = pytest.mark.vdens(isolate=False)

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"

# Run as `sh -euc TRAFFIC sh DIR PYTHON` with uid 1 (not 0: tcpdump would try to
# drop privileges to its own user, which the namespace cannot switch to) and the
# namespace's capabilities kept as ambient ones.
TRAFFIC = r"""
D=$1 PY=$2
listening() { until grep -qs listening "$1"; do sleep 0.02; done; }
ip link set lo up
unshare --net sleep 60 & PEER=$!
TA= TN= TB= SRV=
trap 'kill $PEER $TA $TN $TB $SRV 2>/dev/null || true' EXIT
while [ "$(readlink /proc/$PEER/ns/net)" = "$(readlink /proc/$$/ns/net)" ]; do sleep 0.01; done
B="nsenter -t $PEER -n"
ip link add va address 02:00:00:00:00:0a type veth peer name vb address 02:00:00:00:00:0b
ip link set vb netns $PEER
$B ip link set lo up
$B ip addr add 10.0.0.2/24 dev vb
$B ip addr add fd00::2/64 dev vb nodad
$B ip link set vb up
CAP="tcpdump --immediate-mode -U"
$B $CAP -i vb -w "$D/vb.pcap" 2>"$D/vb.err" & TB=$!
listening "$D/vb.err"
ip addr add 10.0.0.1/24 dev va
ip addr add fd00::1/64 dev va nodad
ip link set va up
$CAP -i va -w "$D/va.pcap" 2>"$D/va.err" & TA=$!
$CAP -i va -w "$D/va-nano.pcap" --time-stamp-precision=nano 2>"$D/va-nano.err" & TN=$!
listening "$D/va.err"
listening "$D/va-nano.err"
$B "$PY" "$D/peer.py" serve "$D" & SRV=$!
until [ -e "$D/ready" ]; do sleep 0.02; done
ping -nc1 -W2 10.0.0.2 >/dev/null
ping -nc1 -W2 fd00::2 >/dev/null
ping -nc1 -W2 -s 3000 10.0.0.2 >/dev/null
ping -nc1 -W2 -s 3000 fd00::2 >/dev/null
"$PY" "$D/peer.py" client "$D"
wait $SRV
SRV=
$B "$PY" "$D/peer.py" ra "$D"
for i in $(seq 100); do  # the kernel's own router solicitation, a second or two after link-up
  tcpdump -nr "$D/va.pcap" 2>/dev/null | grep -q "router solicitation" && break
  sleep 0.1
done
sleep 0.2
kill -INT $TA $TN $TB
wait $TA $TN $TB || true
TA= TN= TB=
"""

# The traffic sockets make: `peer.py ACTION DIR`, run in one namespace or the other.
PEER = r'''
import os, socket, struct, sys

action, d = sys.argv[1], sys.argv[2]
A, B = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")


def checksum(b):
    total = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


if action == "serve":  # in B: one echo connection over IPv4, then one over IPv6
    socks = []
    for fam, host in ((socket.AF_INET, "10.0.0.2"), (socket.AF_INET6, "fd00::2")):
        s = socket.socket(fam)
        s.bind((host, 8080))
        s.listen()
        socks.append(s)
    open(os.path.join(d, "ready"), "w").close()
    for s in socks:
        c, _ = s.accept()
        with c:
            while data := c.recv(65536):
                c.sendall(data)
elif action == "client":  # in A
    for host in ("10.0.0.2", "fd00::2"):
        with socket.create_connection((host, 8080), timeout=5) as c:
            c.sendall(b"hello")
            c.shutdown(socket.SHUT_WR)
            assert c.recv(100) == b"hello"
    try:
        socket.create_connection(("10.0.0.2", 8081), timeout=5)  # closed: a reset
    except ConnectionRefusedError:
        pass
    for fam, host in ((socket.AF_INET, "10.0.0.2"), (socket.AF_INET6, "fd00::2")):
        with socket.socket(fam, socket.SOCK_DGRAM) as u:  # closed: port unreachable
            u.sendto(b"x" * 10, (host, 9))
    va = socket.if_nametoindex("va")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:  # mDNS-like; the join sends MLD
        u.bind(("::", 5353))
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                     socket.inet_pton(socket.AF_INET6, "ff02::fb") + struct.pack("@I", va))
        u.sendto(b"q" * 20, ("ff02::fb", 5353, 0, va))
    # frames the kernel has no device for here, built by hand
    tag = b"\x81\x00\x00\x05"  # 802.1Q, VLAN 5
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, A, bytes([10, 0, 5, 1]), bytes(6),
                      bytes([10, 0, 5, 2]))
    udp = struct.pack("!HHHH", 5000, 5001, 8 + 4, 0) + b"vlan"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     bytes([10, 0, 5, 1]), bytes([10, 0, 5, 2]))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    llc = b"\x42\x42\x03" + bytes(35)  # an all-zero STP configuration BPDU
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as p:
        p.bind(("va", 0))
        p.send(b"\xff" * 6 + A + b"\x88\xb5" + b"experimental".ljust(46, b"\0"))
        p.send(b"\xff" * 6 + A + tag + b"\x08\x06" + arp)
        p.send(B + A + tag + b"\x08\x00" + ip + udp)
        p.send(bytes.fromhex("0180c2000000") + A + struct.pack("!H", len(llc)) + llc)
elif action == "ra":  # in B: a router advertisement with one prefix
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    prefix = struct.pack("!BBBBIII16s", 3, 4, 64, 0x80, 3600, 1800, 0,
                         socket.inet_pton(socket.AF_INET6, "fd00:1::"))
    ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 0, 0, 0) + prefix
    s.sendto(ra, ("ff02::1", 0, 0, socket.if_nametoindex("vb")))
'''


def _tool(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed: "
                    "apt install tcpdump util-linux iproute2 iputils-ping")
    return path


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with va.pcap, va-nano.pcap (the same end, in nanoseconds) and vb.pcap."""
    for tool in ("tcpdump", "unshare", "nsenter", "ip", "ping"):
        _tool(tool)
    d = tmp_path_factory.mktemp("traffic")
    (d / "peer.py").write_text(PEER)
    env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    argv = ["unshare", "--net", "--map-user=1", "--map-group=1", "--keep-caps",
            "sh", "-euc", TRAFFIC, "sh", str(d), sys.executable]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # its group: tcpdumps, the peer's sleep, the server
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    return d


# -- what tcpdump says -----------------------------------------------------------------------


def tcpdump(path: Path, *options: str) -> list[str]:
    """tcpdump's text for each record of a file, continuation lines joined to their record."""
    run = subprocess.run([_tool("tcpdump"), "-n", *options, "-r", str(path)],
                         capture_output=True, text=True)
    if run.returncode != 0:  # only a file cut short is expected
        assert "truncated dump file" in run.stderr, run.stderr
    records: list[str] = []
    for line in run.stdout.splitlines():
        if line[:1].isspace():
            records[-1] += " " + line.strip()
        else:
            records.append(line)
    return records


def verbose(path: Path) -> list[tuple[Decimal, str]]:
    """(timestamp, text) per record from `tcpdump -tt -v -e -n -S`, nanoseconds kept."""
    return [(Decimal(text.split(" ", 1)[0]), text) for text in
            tcpdump(path, "-tt", "-v", "-e", "-S", "--time-stamp-precision=nano")]


def _dotted(endpoint: str) -> str:
    """Our "[fd00::1]:80" or "10.0.0.1:80" as tcpdump writes it: "fd00::1.80"."""
    m = re.fullmatch(r"\[(.+)\]:(\d+)|([\d.]+):(\d+)", endpoint)
    return endpoint if m is None else f"{m[1] or m[3]}.{m[2] or m[4]}"


def agree(ours: str, theirs: str) -> None:
    """Assert that our line for a frame says what tcpdump's verbose text says of it."""
    e = re.escape

    def says(pattern: str) -> None:
        assert re.search(pattern, theirs), f"{ours!r} but tcpdump: {theirs!r} (no {pattern!r})"

    tags = re.match(r"(?:vlan \d+ )*", ours)
    assert tags is not None
    vids = re.findall(r"\d+", tags[0])
    for vid in vids:
        says(rf": vlan {vid}, p \d+, ")
    rest = ours[tags.end():]
    if m := re.fullmatch(r"ARP who-has (\S+) tell (\S+)", rest):
        says(rf"Request who-has {e(m[1])} tell {e(m[2])}, length 28")
    elif m := re.fullmatch(r"ARP (\S+) is-at (\S+)", rest):
        says(rf"Reply {e(m[1])} is-at {e(m[2])}, length 28")
    elif m := re.fullmatch(r"(802\.3|ethertype 0x(\w{4})) (\S+) > (\S+) len=(\d+)", rest):
        says(rf"^\S+ {e(m[3])} > {e(m[4])}, ")
        if m[2]:
            says(rf"\(0x{m[2]}\), length {int(m[5]) + 14 + 4 * len(vids)}: ")
        else:
            says(rf", 802\.3, length {m[5]}: ")
    elif m := re.fullmatch(r"IPv([46]) (\S+) > (\S+) (.*)", rest):
        v6, what = m[1] == "6", m[4]
        says(rf"(: |\) ){e(_dotted(m[2]))} > {e(_dotted(m[3]))}: ")
        _agree_ip(v6, what, says)
    else:
        raise AssertionError(f"no rule to check {ours!r} against tcpdump's {theirs!r}")


def _agree_ip(v6: bool, what: str, says: Callable[[str], None]) -> None:
    e = re.escape
    if frag := re.search(r" frag id=(\d+) off=(\d+)(\+?)", what):
        what = what[:frag.start()] + what[frag.end():]
        ident, off, more = int(frag[1]), frag[2], frag[3]
        if v6:  # tcpdump does not show the M flag
            says(rf"frag \(0x{ident:08x}:{off}\|")
        else:
            plus = r"[^\]]*\+" if more else r"(?![^\]]*\+)"
            says(rf"id {ident}, offset {off}, flags \[{plus}")
        if off != "0":  # no transport header: only the protocol and the length
            m = re.fullmatch(r"(\w+) len=(\d+)", what)
            assert m, what
            if v6:
                says(rf"frag \(0x{ident:08x}:{off}\|{m[2]}\)")
            else:
                says(rf"proto {m[1]} \(\d+\), length {int(m[2]) + 20}\)")
            return
    if m := re.fullmatch(r"TCP \[(\S+)\] seq=(\d+)(?: ack=(\d+))? len=(\d+)", what):
        says(rf"Flags \[{e(m[1])}\], ")
        says(rf", length {m[4]}\b")
        if m[3]:
            says(rf", ack {m[3]}, ")
        if m[4] != "0" or set(m[1]) & set("SFR"):  # when tcpdump shows it
            says(rf", seq {m[2]}[:,]")
    elif m := re.fullmatch(r"UDP len=(\d+)", what):
        try:
            says(rf"UDP, length {m[1]}\b")
        except AssertionError:
            says(r"\.5353: ")  # decoded as (m)DNS instead
    elif m := re.fullmatch(r"ICMP(v6)? echo (request|reply) id=(\d+) seq=(\d+)", what):
        says(rf"ICMP{'6,' if v6 else ''} echo {m[2]}, id {m[3]}, seq {m[4]}\b")
    elif m := re.fullmatch(r"ICMP(v6)? unreachable port for (UDP|TCP) (\S+)", what):
        addr, port = _dotted(m[3]).rsplit(".", 1)
        if v6:
            says(rf"ICMP6, destination unreachable, unreachable port, "
                 rf"{e(addr)} {m[2].lower()} port {port}\b")
        else:
            says(rf"ICMP {e(addr)} {m[2].lower()} port {port} unreachable")
    elif m := re.fullmatch(r"ICMPv6 neighbor solicitation who-has (\S+)", what):
        says(rf"ICMP6, neighbor solicitation, length \d+, who has {e(m[1])}\b")
    elif m := re.fullmatch(r"ICMPv6 neighbor advertisement (\S+)(?: is-at (\S+))?", what):
        says(rf"ICMP6, neighbor advertisement, length \d+, tgt is {e(m[1])}\b")
        if m[2]:
            says(rf"destination link-address option \(2\), length 8 \(1\): {e(m[2])}\b")
    elif m := re.fullmatch(r"ICMPv6 router advertisement((?: prefix \S+)*)", what):
        says(r"ICMP6, router advertisement, ")
        for prefix in m[1].split()[1::2]:
            says(rf"prefix info option \(3\), length 32 \(4\): {e(prefix)}, ")
    elif what in ("ICMPv6 router solicitation", "ICMPv6 multicast listener report v2"):
        says(rf"ICMP6, {e(what.split(' ', 1)[1])}, ")
    else:
        raise AssertionError(f"no rule to check {what!r}")


# -- the reader ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["va.pcap", "va-nano.pcap", "vb.pcap"])
def test_records_are_what_tcpdump_reads(traffic: Path, name: str) -> None:
    path = traffic / name
    magic = path.read_bytes()[:4]
    assert magic == struct.pack("=I", 0xA1B23C4D if "nano" in name else 0xA1B2C3D4)
    records, theirs = read_pcap(path), verbose(path)
    assert len(records) == len(theirs) > 20
    for (ts, frame), (their_ts, text) in zip(records, theirs):
        assert abs(Decimal(ts) - their_ts) < Decimal("3e-7")  # what a float holds of it
        if "nano" not in name:
            assert f"{ts:.6f}" == f"{their_ts:.6f}"
        n = len(frame)  # 802.3 shows its length field instead
        assert re.match(rf"\S+ \S+ > \S+, (ethertype .*?, length {n}|802\.3, length {n - 14}): ",
                        text), text
    for n in (0, 1, 5, len(records), len(records) + 5):
        assert read_pcap(path, last=n) == records[len(records) - min(n, len(records)):]


def test_a_file_cut_anywhere_keeps_its_complete_records(traffic: Path, tmp_path: Path) -> None:
    data = (traffic / "va.pcap").read_bytes()
    full = read_pcap(traffic / "va.pcap")
    ends, at = [24], 24  # where each record ends
    for _, frame in full:
        at += 16 + len(frame)
        ends.append(at)
    assert at == len(data)
    cuts = {0, 1, 3, 4, 10, 23, 24, 25, 39, 40, 41}
    for start, end in list(zip(ends, ends[1:]))[:2] + list(zip(ends, ends[1:]))[-4:]:
        cuts |= {start + 1, start + 15, start + 16, start + 17, (start + end) // 2, end - 1, end}
    cut = tmp_path / "cut.pcap"
    for n in sorted(c for c in cuts if 0 <= c <= len(data)):
        cut.write_bytes(data[:n])
        complete = sum(end <= n for end in ends[1:])
        assert read_pcap(cut) == full[:complete], n
        if n >= 24:  # tcpdump reads the complete ones and reports the rest as truncated
            assert len(tcpdump(cut)) == complete, n


def _swapped(data: bytes) -> bytes:
    """A little-endian pcap written as a big-endian host would write it."""
    out = bytearray(struct.pack(">IHHiIII", *struct.unpack("<IHHiIII", data[:24])))
    at = 24
    while at < len(data):
        fields = struct.unpack_from("<IIII", data, at)
        out += struct.pack(">IIII", *fields) + data[at + 16:at + 16 + fields[2]]
        at += 16 + fields[2]
    return bytes(out)


@pytest.mark.parametrize("name", ["va.pcap", "va-nano.pcap"])
def test_big_endian_files_read_the_same(traffic: Path, tmp_path: Path, name: str) -> None:
    big = tmp_path / name
    big.write_bytes(_swapped((traffic / name).read_bytes()))
    assert big.read_bytes()[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")
    assert verbose(big) == verbose(traffic / name)  # tcpdump agrees it is the same capture
    assert read_pcap(big) == read_pcap(traffic / name)


def test_joined_files_read_as_one(traffic: Path, tmp_path: Path) -> None:
    """Captures joined with cat, global headers and all, even of mixed byte orders and units."""
    names = ["va.pcap", "va-nano.pcap", "vb.pcap"]
    joined = tmp_path / "joined.pcap"
    big = _swapped((traffic / "va.pcap").read_bytes())
    joined.write_bytes(b"".join((traffic / n).read_bytes() for n in names) + big)
    expected = [r for n in names for r in read_pcap(traffic / n)] + read_pcap(traffic / "va.pcap")
    assert read_pcap(joined) == expected
    assert read_pcap(joined, last=3) == expected[-3:]


def test_what_is_not_a_pcap_of_ethernet_frames(tmp_path: Path) -> None:
    path = tmp_path / "f"
    for data in (b"", b"\xd4", b"\xd4\xc3\xb2", b"\xd4\xc3\xb2\xa1\x02\x00"):
        path.write_bytes(data)  # a global header still being written
        assert read_pcap(path) == []
    for data, error in ((b"GIF89a" + bytes(40), "not a pcap"),
                        (b"\x0a\x0d\x0d\x0a" + bytes(40), "not a pcap"),  # pcapng
                        (struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 3, 0, 0, 65535, 1), "not a pcap"),
                        (struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 113),
                         "link type 113"),
                        (struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
                         + struct.pack("=IIII", 1, 2, 1 << 30, 1 << 30), "corrupt record")):
        path.write_bytes(data)
        with pytest.raises(ValueError, match=error):
            read_pcap(path)
    with pytest.raises(ValueError, match="last=-1"):
        read_pcap(path, last=-1)


def test_the_last_frames_of_a_big_file_come_quickly(traffic: Path, tmp_path: Path) -> None:
    data = (traffic / "va.pcap").read_bytes()
    big = tmp_path / "big.pcap"
    repeats = (5 << 20) // (len(data) - 24) + 1
    big.write_bytes(data + data[24:] * repeats)  # > 5 MB
    start = time.monotonic()
    tail = read_pcap(big, last=20)
    took = time.monotonic() - start
    assert tail == read_pcap(traffic / "va.pcap")[-20:]
    assert took < 5, f"{took:.1f}s for {big.stat().st_size >> 20} MB: worse than linear?"


# -- the decoder -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["va.pcap", "vb.pcap"])
def test_each_summary_says_what_tcpdump_says(traffic: Path, name: str) -> None:
    records, theirs = read_pcap(traffic / name), verbose(traffic / name)
    assert len(records) == len(theirs)
    for (_, frame), (_, text) in zip(records, theirs):
        agree(summary(frame), text)


COVERAGE = [  # one line at least matches each
    r"^ARP who-has 10\.0\.0\.2 tell 10\.0\.0\.1$",
    r"^ARP 10\.0\.0\.2 is-at 02:00:00:00:00:0b$",
    r"^IPv4 10\.0\.0\.1 > 10\.0\.0\.2 ICMP echo request id=\d+ seq=1$",
    r"^IPv4 10\.0\.0\.2 > 10\.0\.0\.1 ICMP echo reply id=\d+ seq=1$",
    r"^IPv4 .* ICMP echo request .* frag id=\d+ off=0\+$",
    r"^IPv4 .* ICMP frag id=\d+ off=1480\+ len=1480$",
    r"^IPv4 .* ICMP frag id=\d+ off=2960 len=48$",
    r"^IPv6 fd00::1 > fd00::2 ICMPv6 echo request id=\d+ seq=1$",
    r"^IPv6 .* ICMPv6 echo request .* frag id=\d+ off=0\+$",
    r"^IPv6 .* ICMPv6 frag id=\d+ off=2896 len=112$",
    r"^IPv4 10\.0\.0\.1:\d+ > 10\.0\.0\.2:8080 TCP \[S\] seq=\d+ len=0$",
    r"^IPv4 10\.0\.0\.2:8080 > 10\.0\.0\.1:\d+ TCP \[S\.\] seq=\d+ ack=\d+ len=0$",
    r"^IPv4 .* TCP \[\.\] seq=\d+ ack=\d+ len=0$",
    r"^IPv4 .* TCP \[P\.\] seq=\d+ ack=\d+ len=5$",
    r"^IPv4 .* TCP \[F\.\] ",
    r"^IPv4 10\.0\.0\.2:8081 > 10\.0\.0\.1:\d+ TCP \[R\.\] seq=0 ack=\d+ len=0$",
    r"^IPv6 \[fd00::1\]:\d+ > \[fd00::2\]:8080 TCP \[S\] ",
    r"^IPv6 .* TCP \[P\.\] .* len=5$",
    r"^IPv4 10\.0\.0\.1:\d+ > 10\.0\.0\.2:9 UDP len=10$",
    r"^IPv6 \[fd00::1\]:\d+ > \[fd00::2\]:9 UDP len=10$",
    r"^IPv4 10\.0\.0\.2 > 10\.0\.0\.1 ICMP unreachable port for UDP 10\.0\.0\.2:9$",
    r"^IPv6 fd00::2 > fd00::1 ICMPv6 unreachable port for UDP \[fd00::2\]:9$",
    r"^IPv6 \[fd00::1\]:5353 > \[ff02::fb\]:5353 UDP len=20$",
    r"^IPv6 fd00::1 > ff02::1:ff00:2 ICMPv6 neighbor solicitation who-has fd00::2$",
    r"^IPv6 fd00::2 > fd00::1 ICMPv6 neighbor advertisement fd00::2 is-at 02:00:00:00:00:0b$",
    r"^IPv6 fe80::\S+ > ff02::2 ICMPv6 router solicitation$",  # from either end
    r"^IPv6 \S+ > ff02::1 ICMPv6 router advertisement prefix fd00:1::/64$",
    r"^IPv6 \S+ > ff02::16 ICMPv6 multicast listener report v2$",  # after a hop-by-hop header
    r"^ethertype 0x88b5 02:00:00:00:00:0a > ff:ff:ff:ff:ff:ff len=46$",
    r"^vlan 5 ARP who-has 10\.0\.5\.2 tell 10\.0\.5\.1$",
    r"^vlan 5 IPv4 10\.0\.5\.1:5000 > 10\.0\.5\.2:5001 UDP len=4$",
    r"^802\.3 02:00:00:00:00:0a > 01:80:c2:00:00:00 len=38$",
]


def test_the_traffic_has_every_kind_of_frame(traffic: Path) -> None:
    lines = [summary(frame) for _, frame in read_pcap(traffic / "va.pcap")]
    missing = [p for p in COVERAGE if not any(re.search(p, line) for line in lines)]
    assert not missing, "\n".join(["none of these lines:", *lines, "matches:", *missing])


def _real_frames(traffic: Path) -> list[bytes]:
    return [frame for _, frame in read_pcap(traffic / "va.pcap")]


def test_every_cut_of_a_real_frame_says_truncated_or_stands(traffic: Path) -> None:
    for frame in _real_frames(traffic):
        whole = summary(frame)
        for n in range(len(frame)):
            line = summary(frame[:n])
            assert "\n" not in line and line
            # a frame cut within its headers says so; cut in its payload, it reads the same
            assert line.endswith(("truncated", f"truncated len={n}")) \
                or line.split(" len=")[0] == whole.split(" len=")[0], (whole, n, line)


RANDOM = settings(max_examples=400, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])


@RANDOM
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(frame: bytes) -> None:
    line = summary(frame)
    assert isinstance(line, str) and line and "\n" not in line


@RANDOM
@given(data=st.data())
def test_damaged_real_frames_never_raise(traffic: Path, data: st.DataObject) -> None:
    frame = bytearray(data.draw(st.sampled_from(_real_frames(traffic))))
    for at, value in data.draw(st.lists(st.tuples(st.integers(0, len(frame) - 1),
                                                   st.integers(0, 255)), max_size=6)):
        frame[at] = value
    frame = frame[:data.draw(st.integers(0, len(frame)))]
    line = summary(bytes(frame))
    assert line and "\n" not in line


@RANDOM
@given(st.binary(max_size=200))
def test_a_pcap_of_random_records_gives_records_or_value_error(tail: bytes) -> None:
    header = struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
        f.write(header + tail)
        f.flush()
        try:
            records = read_pcap(f.name)
        except ValueError as e:
            assert "corrupt record" in str(e) or "link type" in str(e)
            return
    assert sum(16 + len(frame) for _, frame in records) <= len(tail)


def test_summary_of_odd_frames() -> None:
    assert summary(b"") == "truncated len=0"
    assert summary(b"\xff" * 13) == "truncated len=13"
    assert summary(b"\xff" * 12 + b"\x81\x00\x00\x07") == "vlan 7 truncated len=16"
    assert summary(b"\xff" * 12 + b"\x08\x00\x45") == "IPv4 truncated"
    assert summary(b"\xff" * 12 + b"\x08\x00\x65" + bytes(30)).startswith("IPv4 bad header")
    assert summary(bytearray(b"\xff" * 12 + b"\x86\xdd")) == "IPv6 truncated"


# -- several captures, merged -------------------------------------------------------------------


def test_summarize_merges_captures_in_time_order_with_direction(traffic: Path) -> None:
    files = {"va": traffic / "va.pcap", "h2/vb": traffic / "vb.pcap"}
    own = {"va": MAC_A.upper(), "h2/vb": MAC_B}
    # what tcpdump says: its own clock column, and the verbose text for the checks
    theirs = []
    for index, (label, path) in enumerate(files.items()):
        clocks = [text.split(" ", 1)[0] for text in tcpdump(path)]
        for clock, (ts, text) in zip(clocks, verbose(path), strict=True):
            theirs.append((ts, index, clock, label, text))
    theirs.sort(key=lambda t: (t[0], t[1]))
    lines = summarize(files, last=25, own_macs=own)
    assert len(lines) == 25
    for line, (_, _, clock, label, text) in zip(lines, theirs[-25:]):
        m = re.fullmatch(r"(\d\d:\d\d:\d\d\.\d{6}) (va   |h2/vb) (out|in |\?  ) (.*)", line)
        assert m, line
        assert (m[1], m[2].strip()) == (clock, label)
        source = text.split(" ", 2)[1]
        assert m[3] == ("out" if source == own[label].lower() else "in "), (line, text)
        agree(m[4], text)
    assert len(summarize(files, last=1000, own_macs=own)) == len(theirs)


def test_summarize_without_own_macs_or_files(traffic: Path) -> None:
    files: dict[str, str | Path] = {"vde0": str(traffic / "va.pcap"), "gone": traffic / "no.pcap"}
    plain = summarize(files, last=3)
    assert len(plain) == 3
    first = r"(ARP|IPv[46]|ethertype|802\.3|vlan)"
    assert all(re.fullmatch(rf"\d\d:\d\d:\d\d\.\d{{6}} vde0 {first} .*", line) for line in plain), plain
    partly = summarize(files, last=3, own_macs={"other": MAC_A})
    assert [line.replace(" vde0 ?   ", " vde0 ") for line in partly] == plain
    assert summarize({}, own_macs={}) == []
    assert summarize(files, last=0) == []


