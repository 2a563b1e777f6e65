"""Real TLS on 127.0.0.1 with the CA's leaf: trusted only via the root, reloadable."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import ssl
import subprocess
import textwrap
from pathlib import Path

import pytest
from cryptography import x509

from outpost_server.ca import OfflineCA
from outpost_server.ca.keystore import ScryptParams
from outpost_server.net.listener import tls_context

PASS = b"correct horse battery staple"
FAST = ScryptParams(n=2**10, r=8, p=1)


@pytest.fixture
def ca(tmp_path: Path) -> OfflineCA:
    ca, _ = OfflineCA.init(
        tmp_path / "ca",
        site="alpha",
        names=["outpost.alpha.internal", "127.0.0.1"],
        passphrase=PASS,
        now=dt.datetime.now(dt.UTC),
        actor="test",
        kdf=FAST,
    )
    return ca


async def _serve(ctx: ssl.SSLContext) -> tuple[asyncio.AbstractServer, int]:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await r.read(1)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


async def _peer_serial(port: int, client: ssl.SSLContext, hostname: str = "127.0.0.1") -> int:
    _, w = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=hostname)
    try:
        der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        w.close()


async def test_handshake_trusting_only_the_root(ca: OfflineCA) -> None:
    files = ca.current_leaf()
    server, port = await _serve(tls_context(str(files.leaf_chain), str(files.leaf_key)))
    try:
        trusting = ssl.create_default_context(cafile=str(files.root_cert))
        assert await _peer_serial(port, trusting) == int(files.serial, 16)

        bare = ssl.SSLContext(
            ssl.PROTOCOL_TLS_CLIENT
        )  # no roots at all: the Outpost root is missing
        with pytest.raises(ssl.SSLCertVerificationError) as exc:
            await _peer_serial(port, bare)
        assert "unable to get local issuer certificate" in str(exc.value)

        with pytest.raises(ssl.SSLCertVerificationError) as exc:
            await _peer_serial(port, trusting, hostname="127.0.0.2")
        assert "IP address mismatch" in str(exc.value)
    finally:
        server.close()
        await server.wait_closed()


async def test_server_reloads_context_on_new_generation(ca: OfflineCA) -> None:
    files = ca.current_leaf()
    ctx = tls_context(str(files.leaf_chain), str(files.leaf_key))
    server, port = await _serve(ctx)
    try:
        client = ssl.create_default_context(cafile=str(files.root_cert))
        assert await _peer_serial(port, client) == int(files.serial, 16)
        ca.renew(dt.datetime.now(dt.UTC))
        new = ca.current_leaf()
        assert new.generation == files.generation + 1
        assert await _peer_serial(port, client) == int(
            files.serial, 16
        )  # old leaf served until reload
        ctx.load_cert_chain(
            str(new.leaf_chain), str(new.leaf_key)
        )  # what the server does on a new generation
        assert await _peer_serial(port, client) == int(new.serial, 16)
    finally:
        server.close()
        await server.wait_closed()


GO_VERIFY = textwrap.dedent(
    """
    package main

    import (
        "crypto/x509"
        "encoding/pem"
        "fmt"
        "os"
    )

    func certs(path string) []*x509.Certificate {
        data, err := os.ReadFile(path)
        if err != nil { panic(err) }
        var out []*x509.Certificate
        for {
            var b *pem.Block
            b, data = pem.Decode(data)
            if b == nil { return out }
            c, err := x509.ParseCertificate(b.Bytes)
            if err != nil { panic(err) }
            out = append(out, c)
        }
    }

    func main() {
        roots := x509.NewCertPool()
        roots.AddCert(certs(os.Args[1])[0])
        chain := certs(os.Args[2])
        inter := x509.NewCertPool()
        for _, c := range chain[1:] { inter.AddCert(c) }
        // DNSName as the Tailscale client daemon uses it: "" when dialling DERP by IP literal.
        opts := x509.VerifyOptions{DNSName: os.Args[3], Roots: roots, Intermediates: inter}
        _, err := chain[0].Verify(opts)
        if err != nil { fmt.Println(err); os.Exit(1) }
        fmt.Println("ok")
    }
    """
)


@pytest.mark.skipif(shutil.which("go") is None, reason="Go toolchain not installed")
@pytest.mark.parametrize("dns_name", ["", "outpost.alpha.internal", "127.0.0.1"])
def test_go_crypto_x509_accepts_the_chain(ca: OfflineCA, tmp_path: Path, dns_name: str) -> None:
    src = tmp_path / "verify.go"
    src.write_text(GO_VERIFY)
    files = ca.current_leaf()
    out = subprocess.run(
        ["go", "run", str(src), str(files.root_cert), str(files.leaf_chain), dns_name],
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr


async def test_client_without_the_outpost_root_is_counted_and_logged(tmp_path: Path) -> None:
    """A TLS client that does not trust our root fails its handshake; the server says so."""
    import logging

    from .conftest import start_server

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("outpost_server.net.listener").addHandler(handler)
    running = await start_server(tmp_path / "data")
    try:
        assert running.server.config.tls_listen is not None
        host, port = running.server.config.tls_listen
        stranger = ssl.create_default_context()  # the system store: no Outpost root in it
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(host, port, ssl=stranger, server_hostname=host)
        counters = running.server.public.counters
        for _ in range(100):
            if counters.tls_handshake_failures:
                break
            await asyncio.sleep(0.05)
        # Python's client hangs up without an alert; Go clients send one, which adds the hint
        # about the root (checked with official clients in tests/interop/test_tls.py).
        assert counters.tls_handshake_failures == 1
        assert any(m.startswith("TLS handshake from 127.0.0.1") for m in seen), seen
        # a client that has the root still gets through on the same listener
        trusting = ssl.create_default_context(cafile=str(running.server.config.data_dir / "tls" / "root.pem"))
        r, w = await asyncio.open_connection(host, port, ssl=trusting, server_hostname=host)
        w.write(f"GET /generate_204 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert (await r.readline()).startswith(b"HTTP/1.1 204")
        w.close()
    finally:
        logging.getLogger("outpost_server.net.listener").removeHandler(handler)
        await running.server.stop()
