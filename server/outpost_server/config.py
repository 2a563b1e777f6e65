"""Server configuration: a frozen value built once from the command line.

Defaults are the embedded appliance defaults: SQLite under the data
directory, the local DERP relay and STUN, listening on 127.0.0.1 only, so a
fresh `make up` never exposes anything beyond the machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

from .errors import InvalidInput

DEFAULT_LISTEN = ("127.0.0.1", 8080)
DEFAULT_TLS_LISTEN = ("127.0.0.1", 8443)
DEFAULT_STUN_LISTEN = ("127.0.0.1", 3478)
DEFAULT_BASE_DOMAIN = "outpost.internal"  # .internal is reserved for private use (ICANN, 2024)
MESH_KEY_BYTES = 32  # key.DERPMesh: 32 bytes written as 64 hex digits
DEFAULT_DERP_REGION_ID = 900  # 900-999 are reserved for user-run DERP regions


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidInput(f"{what} must look like HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        ip_address(host)
    except ValueError:
        if host not in ("localhost",):
            raise InvalidInput(f"{what} must be an IP address, got {host!r}") from None
    p = int(port)
    if not 0 < p < 65536:
        raise InvalidInput(f"{what} port out of range: {p}")
    return host, p


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    listen: tuple[str, int] = DEFAULT_LISTEN
    tls_listen: tuple[str, int] | None = DEFAULT_TLS_LISTEN
    stun_listen: tuple[str, int] | None = DEFAULT_STUN_LISTEN
    server_url: str = ""
    base_domain: str = DEFAULT_BASE_DOMAIN
    site_name: str = "outpost"
    # From DATA_DIR/site.json (site.py): more names clients dial, for the TLS
    # certificate; and which site options the command line fixed (they win).
    addresses: tuple[str, ...] = ()
    site_from_command_line: tuple[str, ...] = ()
    derp_region_id: int = DEFAULT_DERP_REGION_ID
    database_url: str = ""
    # An ephemeral node (ephemeral key, tsnet Ephemeral, --state=mem:) is deleted
    # after this long without a map stream; a restart within it keeps the node.
    ephemeral_grace_s: float = 120.0
    # DERP meshing (two relays of one site forward for each other's clients).
    mesh_key: bytes | None = field(default=None, repr=False)
    mesh_with: tuple[str, ...] = ()  # https://HOST:PORT of the other relays
    mesh_ca_files: tuple[Path, ...] = ()  # roots of the other relays, besides our own
    # A relay-only appliance: admit the node keys this control appliance has registered.
    admission_from: str = ""  # https://HOST:PORT
    # Advisory per-client send rate announced in ServerInfo (0 = none, as derper).
    derp_rate_bytes_per_s: int = 0
    derp_rate_burst_bytes: int = 0

    @property
    def admin_socket(self) -> Path:
        return self.data_dir / "admin.sock"

    @property
    def effective_server_url(self) -> str:
        if self.server_url:
            return self.server_url.rstrip("/")
        host, port = self.listen
        return f"http://{host}" if port == 80 else f"http://{host}:{port}"

    @property
    def public_host(self) -> str:
        """The address clients dial for DERP and STUN: the login server's host."""
        return urlsplit(self.effective_server_url).hostname or self.listen[0]

    def validate(self) -> ServerConfig:
        url = urlsplit(self.effective_server_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidInput(f"server URL must be http(s)://HOST[:PORT], got {self.server_url!r}")
        if not self.base_domain or self.base_domain.startswith(".") or " " in self.base_domain:
            raise InvalidInput(f"invalid base domain {self.base_domain!r}")
        if self.mesh_with and self.mesh_key is None:
            raise InvalidInput("--mesh-with needs --mesh-key-file (the key all meshed relays share)")
        if self.mesh_key is not None and len(self.mesh_key) != MESH_KEY_BYTES:
            raise InvalidInput(f"mesh key must be {MESH_KEY_BYTES} bytes (64 hex digits)")
        if self.admission_from and self.mesh_key is None:
            raise InvalidInput("--admission-from needs --mesh-key-file (it authenticates the request)")
        for url in (*self.mesh_with, *([self.admission_from] if self.admission_from else [])):
            u = urlsplit(url)
            if u.scheme != "https" or not u.hostname:
                raise InvalidInput(f"mesh peer must be https://HOST[:PORT], got {url!r}")
        if self.derp_rate_bytes_per_s < 0 or self.derp_rate_burst_bytes < 0:
            raise InvalidInput("DERP rate limit and burst must be >= 0")
        return self


def read_mesh_key(path: Path) -> bytes:
    """A mesh key file: 64 hex digits (whitespace ignored), like derper's --mesh-psk-file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"mesh key file {path}: {exc.strerror}") from None
    try:
        raw = bytes.fromhex("".join(text.split()))
    except ValueError:
        raise InvalidInput(f"mesh key file {path}: not hexadecimal") from None
    if len(raw) != MESH_KEY_BYTES:
        raise InvalidInput(f"mesh key file {path}: {len(raw)} bytes, need {MESH_KEY_BYTES} (64 hex digits)")
    return raw
