"""Server names for certificates, and the name constraints of the issuing CA.

A name is either an IP address (v4 or v6) or a DNS host name. Certificates
carry every name as a subjectAltName; the common name is never a host name
(see `certs.leaf_subject`).

Name constraints: clients install the Outpost root in their *system* trust
store (Go reads `SSL_CERT_FILE`; Windows, macOS, iOS and Android have their own
stores). A laptop that later leaves the site still trusts that root, so a
stolen intermediate key could impersonate any web site to it. The issuing
intermediate therefore carries critical permitted subtrees: by default only
the non-public DNS namespaces and non-public IP ranges, plus the site's own
names given at `ca init`. Every client platform (Go, Windows CryptoAPI, Apple
Security framework, Android/BoringSSL, OpenSSL) enforces them, and Go also
rejects IP SANs outside permitted IP ranges even when it verifies a DERP
connection by IP literal with an empty DNS name - so we check every name
against the constraints before signing and refuse names that would produce a
certificate clients reject.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from ..errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_NAMES_PER_CERT = 100  # far above any appliance's needs; bounds certificate size
MAX_DNS_NAME_CHARS = 253  # RFC 1035 limit for a presentation-format name
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # RFC 1123 LDH label

# Namespaces that never resolve on the public internet (ICANN/IETF reserved or
# conventional for private sites). A certificate for one of these is useless
# to an attacker against a device that left the site.
DEFAULT_PERMITTED_DNS: tuple[str, ...] = ("internal", "home.arpa", "lan", "local", "localhost")
# Non-globally-routable ranges (RFC 1918, RFC 6598 shared/CGNAT - Tailscale's
# own 100.64/10 -, loopback, link-local, RFC 2544 benchmarking which test
# networks use, IPv6 ULA, link-local and loopback).
DEFAULT_PERMITTED_IP: tuple[str, ...] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "198.18.0.0/15",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
)


def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def normalise_dns(text: str, *, what: str = "DNS name") -> str:
    """Lower-case, strip a trailing dot, and check RFC 1123 syntax (no wildcards)."""
    name = text.strip().rstrip(".").lower()
    if not name:
        raise InvalidInput(f"empty {what}")
    if "*" in name:
        raise InvalidInput(f"{what} {text!r}: wildcard names are not issued")
    if len(name) > MAX_DNS_NAME_CHARS or not all(_LABEL.match(label) for label in name.split(".")):
        raise InvalidInput(
            f"{what} {text!r} is not a valid host name (letters, digits, '-' and '.', "
            "labels of 1-63 characters)"
        )
    return name


def parse_name(text: str) -> IPAddress | str:
    """One certificate name: an IP address or a DNS host name."""
    ip = parse_ip(text)
    if ip is not None:
        if ip.is_unspecified:
            raise InvalidInput(
                f"{text!r} is the unspecified address: give the address clients actually dial"
            )
        return ip
    return normalise_dns(text)


def parse_names(texts: Iterable[str]) -> list[IPAddress | str]:
    """Deduplicated, sorted (DNS names first, then IPs) list of names."""
    seen: dict[str, IPAddress | str] = {}
    for t in texts:
        n = parse_name(t)
        seen[str(n)] = n
    if not seen:
        raise InvalidInput("a certificate needs at least one DNS name or IP address")
    if len(seen) > MAX_NAMES_PER_CERT:
        raise InvalidInput(f"at most {MAX_NAMES_PER_CERT} names per certificate")
    dns = sorted(n for n in seen.values() if isinstance(n, str))
    ips = sorted((n for n in seen.values() if not isinstance(n, str)), key=lambda a: (a.version, a))
    return [*dns, *ips]


def general_name(name: IPAddress | str) -> x509.GeneralName:
    return x509.DNSName(name) if isinstance(name, str) else x509.IPAddress(name)


def parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise InvalidInput(f"{text!r} is not an IP range (expected e.g. 10.20.0.0/16)") from exc


@dataclass(frozen=True)
class NameConstraints:
    """Permitted subtrees of the issuing intermediate. Empty means unconstrained."""

    dns: tuple[str, ...]
    ip: tuple[IPNetwork, ...]

    @classmethod
    def build(
        cls,
        *,
        names: Sequence[IPAddress | str] = (),
        permit_dns: Sequence[str] | None = None,
        permit_ip: Sequence[str] | None = None,
    ) -> NameConstraints:
        """Defaults (or the operator's lists) plus each of the site's own names.

        A site name outside the listed ranges is added as an exact subtree
        (a DNS name permits itself and its subdomains; an IP a /32 or /128), so
        the names given at `ca init` always fit.
        """
        dns = [
            normalise_dns(d, what="permitted DNS domain")
            for d in (DEFAULT_PERMITTED_DNS if permit_dns is None else permit_dns)
        ]
        nets = [
            parse_network(n) for n in (DEFAULT_PERMITTED_IP if permit_ip is None else permit_ip)
        ]
        probe = cls(tuple(dns), tuple(nets))
        for n in names:
            if probe.permits(n):
                continue
            if isinstance(n, str):
                dns.append(n)
            else:
                nets.append(ipaddress.ip_network(n))
            probe = cls(tuple(dns), tuple(nets))
        return cls(tuple(sorted(set(dns))), tuple(sorted(set(nets), key=lambda n: (n.version, n))))

    def permits(self, name: IPAddress | str) -> bool:
        """RFC 5280 4.2.1.10 semantics, per name type, as Go and OpenSSL apply them."""
        if isinstance(name, str):
            if not self.dns:
                return True
            return any(name == d or name.endswith("." + d) for d in self.dns)
        if not self.ip:
            return True
        return any(name.version == net.version and name in net for net in self.ip)

    def check(self, names: Iterable[IPAddress | str]) -> None:
        outside = [str(n) for n in names if not self.permits(n)]
        if outside:
            raise InvalidInput(
                "outside the issuing CA's name constraints (clients would reject the "
                f"certificate): {', '.join(outside)}. Permitted: {self.describe()}. "
                "Renew the intermediate with wider constraints (needs the root key)."
            )

    def describe(self) -> str:
        dns = ", ".join(self.dns) or "any DNS name"
        ip = ", ".join(map(str, self.ip)) or "any IP address"
        return f"DNS {dns}; IP {ip}"

    def extension(self) -> x509.NameConstraints | None:
        permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns]
        permitted += [x509.IPAddress(n) for n in self.ip]
        if not permitted:
            return None
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)

    @classmethod
    def from_extension(cls, ext: x509.NameConstraints | None) -> NameConstraints:
        """The permitted subtrees of a certificate's extension (None: unconstrained).

        Only what `extension()` writes is understood: permitted DNS names and
        IP ranges. Excluded subtrees and other name types cannot be carried in
        the CA's state (and leaves checked against it), so they are refused.
        """
        if ext is None:
            return cls((), ())
        if ext.excluded_subtrees:
            raise InvalidInput("excluded name-constraint subtrees are not supported")
        dns: list[str] = []
        ips: list[IPNetwork] = []
        for g in ext.permitted_subtrees or []:
            if isinstance(g, x509.DNSName):
                dns.append(normalise_dns(g.value.lstrip("."), what="permitted DNS domain"))
            elif isinstance(g, x509.IPAddress) and not isinstance(
                g.value, ipaddress.IPv4Address | ipaddress.IPv6Address
            ):
                ips.append(g.value)
            else:
                raise InvalidInput(f"name constraint {g.value!r} is not a DNS domain or IP range")
        return cls(tuple(sorted(set(dns))), tuple(sorted(set(ips), key=lambda n: (n.version, n))))

    def wider_than(self, outer: NameConstraints) -> list[str]:
        """What `self` permits that `outer` does not (empty: `self` is within `outer`).

        RFC 5280 per name type: no subtree of a type permits every name of it.
        """
        out: list[str] = []
        if outer.dns:
            if not self.dns:
                out.append("any DNS name")
            out += [d for d in self.dns if not outer.permits(d)]
        if outer.ip:
            if not self.ip:
                out.append("any IP address")
            out += [
                str(n)
                for n in self.ip
                if not any(n.version == o.version and n.subnet_of(o) for o in outer.ip)  # type: ignore[arg-type]
            ]
        return out

    def to_json(self) -> dict[str, list[str]]:
        return {"dns": list(self.dns), "ip": [str(n) for n in self.ip]}

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> NameConstraints:
        return cls(tuple(data.get("dns", [])), tuple(parse_network(n) for n in data.get("ip", [])))
