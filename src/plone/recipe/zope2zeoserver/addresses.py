"""zeo.conf addresses as our tools print them and reach them.

An address is what ZConfig makes of zeo.conf's: a unix socket path, or
(host, port).  Every run-time tool imports this module, the control
script on each command and bin/zeopack on each pack, so it imports
nothing beyond small modules of the standard library (socket, os,
stat): `describe` used to live in `monitor`, which brings asyncio.
"""

import errno
import os
import socket
import stat


def describe(address):
    """ADDRESS as people write it: PATH, HOST:PORT or [IPv6]:PORT."""
    if isinstance(address, str):
        return address
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def family(address):
    """The socket family of ADDRESS (zeo.conf form)."""
    if isinstance(address, str):
        return socket.AF_UNIX
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


def client_address(address):
    """(family, address) that reaches a server listening on ADDRESS
    (zeo.conf form): a wildcard host means this machine."""
    if not isinstance(address, str):
        host, port = address
        address = ({"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
                   .get(host, host), port)
    return family(address), address


def remove_stale_socket(path):
    """A unix socket file left by a server that died is removed, so that
    listening there works; one that still answers is in use (OSError
    EADDRINUSE).  Any other kind of file is left for bind to refuse."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
            return
    raise OSError(errno.EADDRINUSE, "in use")


def can_connect(address):
    """True if something accepts connections on ADDRESS (zeo.conf form)."""
    family, address = client_address(address)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(address)
        except OSError:
            return False
    return True
