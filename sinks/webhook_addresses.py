"""Which hosts alert webhooks may reach: public addresses only, unless allowed.

Webhook URLs are typed by people, and the names in them are resolved by DNS
that someone else may control. A URL that reaches loopback, link-local,
private or cloud-metadata addresses would let whoever sets it (or whoever
answers its DNS) make the notifier post signed requests into the machine's
own network. So a host is refused when it is, or resolves to:

- a cloud metadata address or name (169.254.169.254, fd00:ec2::254,
  metadata.google.internal, ...): always;
- loopback, link-local, private (RFC 1918, fc00::/7), unspecified or any
  other non-public address: unless `JOURNEYS_ALERT_ALLOW_PRIVATE` is set.

Pure functions; `sinks.webhook_delivery` applies them to every address a
name resolves to when connecting, so a name that resolves elsewhere later
(DNS rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
import re
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Names of cloud metadata services (GCP, AWS, Azure, Alibaba, OpenStack).
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
    }
)
#: Addresses of cloud metadata services.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: Numeric IPv4 spellings that `inet_aton` accepts besides dotted quads (`127.1`, `0x7f.1`).
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")
ALLOW_HINT = "set JOURNEYS_ALERT_ALLOW_PRIVATE=true to allow non-public addresses"


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address, else `ip`."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if ip.sixtofour:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_problem(ip: IPAddress, allow_private: bool) -> str | None:
    """Why a webhook may not reach `ip` (None when it may)."""
    ip = _embedded_ipv4(ip)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    for kind, test in (
        ("an unspecified", ip.is_unspecified),
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("a private", ip.is_private),
        ("a multicast", ip.is_multicast),
        ("a non-public", not ip.is_global),
    ):
        if test:
            return f"{kind} address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host spells out (any numeric IPv4 form, IPv6), or None for a name."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def host_problem(host: str, allow_private: bool) -> str | None:
    """Why a webhook may not go to `host` as written (None when it may, or when only DNS knows)."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        return "a cloud metadata host"
    ip = literal_address(name)
    if ip is not None:
        return address_problem(ip, allow_private)
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        return "a loopback name"
    return None
