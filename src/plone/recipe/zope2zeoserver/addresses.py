"""zeo.conf addresses as our tools print them and reach them.

An address is what ZConfig makes of zeo.conf's: a unix socket path, or
(host, port).  Every run-time tool imports this module, the control
script on each command and bin/zeopack on each pack, so it imports
nothing beyond the standard library's socket: `describe` used to live
in `monitor`, which brings asyncio.
"""

import socket


def describe(address):
    """ADDRESS as people write it: PATH, HOST:PORT or [IPv6]:PORT."""
    if isinstance(address, str):
        return address
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_address(address):
    """(family, address) that reaches a server listening on ADDRESS
    (zeo.conf form): a wildcard host means this machine."""
    if isinstance(address, str):
        return socket.AF_UNIX, address
    host, port = address
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(
        host, host)
    return socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port)
