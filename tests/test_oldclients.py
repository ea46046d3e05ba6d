"""Clients too old for a ZEO 6 server are named in its log, once.

A ZEO 4 client (Plone 5.0/5.1) or ZEO 3.10 client (Plone 4) answers the
server's handshake `Z5` with its own older protocol and retries several
times a second, forever.  The server says at WARNING which client it is
and what it needs, then at most once a minute; ZEO 5+ clients, the
`ruok` probe and `bin/zeo start`'s readiness check are served as before.
The old clients are raw sockets speaking the first message of ZEO's
protocol (4-byte big-endian length, then the version), as they do.
"""

import json
import socket
import ssl
import struct

import pytest

from helpers import commit, new_buildout, read, wait_for
from test_tls import context, secured  # noqa: F401 (a fixture)


LOG_FORMAT = "%(levelname)s %(name)s %(message)s"


@pytest.fixture(scope="module")
def plain(tmp_path_factory, dist_dir, eggs_dir):
    """A running server of the default part, its log showing levels."""
    directory = tmp_path_factory.mktemp("oldclients") / "buildout"
    with new_buildout(directory, dist_dir, eggs_dir) as b:
        b.install(f"zeo-log-format = {LOG_FORMAT}")
        result = b.ctl("start")
        assert result.returncode == 0, result.stdout + result.stderr
        b.log = b.path("var", "log", "zeo.log")
        b.address = ("127.0.0.1", b.port)
        yield b


def message(sock, size):
    """SIZE bytes from SOCK, fewer if it closes first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def answer(address, version, tls=None):
    """Connect to ADDRESS (through the TLS context TLS if given), read the
    server's handshake, answer VERSION: (the server's handshake, what the
    server sent after the answer until it closed the connection)."""
    with socket.create_connection(address, timeout=5) as raw:
        sock = (tls.wrap_socket(raw, server_hostname=address[0])
                if tls else raw)
        (size,) = struct.unpack(">I", message(sock, 4))
        greeting = message(sock, size)
        sock.sendall(struct.pack(">I", len(version)) + version)
        try:
            rest = message(sock, 10000)
        except (ssl.SSLEOFError, ConnectionResetError):
            rest = b""
    return greeting, rest


def warnings(b, version):
    return [line for line in b.log.read_text().splitlines()
            if f"asked for ZEO protocol {version}" in line]


@pytest.mark.parametrize("version, client", [
    ("Z4", "a ZEO 4 client, e.g. Plone 5.0 or 5.1"),
    ("Z3101", "a ZEO 3 client, e.g. Plone 4"),
])
def test_old_client_is_named_once(plain, version, client):
    greeting, rest = answer(plain.address, version.encode())
    assert greeting == b"Z5"
    assert rest == b""  # the server closed the connection
    lines = wait_for(lambda: warnings(plain, version), timeout=5)
    assert len(lines) == 1, plain.log.read_text()[-3000:]
    line = lines[0]
    assert line.startswith("WARNING "), line
    assert "client 127.0.0.1:" in line, line
    assert f"({client})" in line, line
    assert line.endswith("this server speaks protocol 5 only: the client "
                         "needs ZEO 5 or newer (Plone 5.2 or newer)"), line
    # The old client retries several times a second: still one line.
    for _ in range(20):
        assert answer(plain.address, version.encode()) == (b"Z5", b"")
    assert warnings(plain, version) == lines
    assert "bad handshake" not in plain.log.read_text()


def test_good_clients_are_served_after_old_ones(plain):
    for _ in range(3):
        answer(plain.address, b"Z4")
    greeting, rest = answer(plain.address, b"ruok")
    assert greeting == b"Z5"
    status = json.loads(rest[4:])
    assert "1" in status, status
    commit(plain.address, after_old_clients="yes")
    assert read(plain.address, "after_old_clients") == "yes"
    assert plain.ctl("status").returncode == 0
    log = plain.log.read_text()
    assert "received handshake 'Z5'" in log, log[-3000:]
    for line in log.splitlines():
        if line.startswith(("WARNING", "ERROR")):
            assert "asked for ZEO protocol Z" in line, line


def test_old_client_over_tls_is_named(secured):  # noqa: F811
    tls_dir = secured.tls
    zope = context(tls_dir, (tls_dir / "zope.pem", tls_dir / "zope-key.pem"))
    for _ in range(5):
        assert answer(secured.address, b"Z4", tls=zope) == (b"Z5", b"")
    lines = wait_for(lambda: warnings(secured, "Z4"), timeout=5)
    assert len(lines) == 1, secured.log.read_text()[-3000:]
    assert lines[0].startswith("WARNING ZEO.handshake client 127.0.0.1:")
    assert "the client needs ZEO 5 or newer" in lines[0]
