"""The shell scripts run inside the namespaces: the same text on both sides."""

from __future__ import annotations

import os
import sys

CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checker.py")

# -- case 2: data path --------------------------------------------------------------

DP_SERVER_IP = "10.9.0.2"
DP_CLIENT_IP = "10.9.0.1"

DP_SERVER = f"""\
ip addr add {DP_SERVER_IP}/24 dev vde0 && ip link set vde0 up && exec iperf3 -s -1"""

DP_CLIENT = """\
set -e
ip addr add {me}/24 dev vde0
ip link set vde0 up
i=0; until ping -c 1 -W 0.5 {peer} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 40 ] || exit 3; done
ping -c {count} -i 0.002 {peer} > {out}/ping.txt
i=0; until iperf3 -c {peer} -t {secs} -J > {out}/iperf.json 2>{out}/iperf.err; do
  i=$((i+1)); [ $i -lt 50 ] || exit 4; sleep 0.1
done
echo done > {out}/done
"""


def dp_client(out: str, secs: int, count: int) -> str:
    return DP_CLIENT.format(me=DP_CLIENT_IP, peer=DP_SERVER_IP, out=out, secs=secs, count=count)


# -- case 3: scale ------------------------------------------------------------------

PREFIX = "10.1"
CHECKER_IP = f"{PREFIX}.255.254"


def host_ip(i: int) -> str:
    """Address of host i (1-based) on the /16."""
    return f"{PREFIX}.{i // 256}.{i % 256}"


def host_up(i: int) -> str:
    return f"ip addr add {host_ip(i)}/16 dev vde0 && ip link set vde0 up"


def checker(count: int, timeout: float = 60.0) -> str:
    return (f"ip addr add {CHECKER_IP}/16 dev vde0 && ip link set vde0 up && "
            f"exec {sys.executable} {CHECKER} {PREFIX} 1 {count} {timeout}")
