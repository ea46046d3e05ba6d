"""The client side of TLS for our own tools (bin/zeopack, the control
script's stats and check): a refusal becomes one clear line.

ZEO's client retries a refused TLS connection until its timeout and then
only says it timed out.  These tools shake hands themselves first: with
TLS 1.3 a refused client certificate only shows when reading, and an
asyncio server closes the connection without sending the TLS alert, so
"closed before its first message" means "refused".

Run time: standard library only.
"""

import socket
import ssl


class TLSError(Exception):
    """The TLS connection failed; the text is the whole explanation."""


def client_context(tls):
    """A context presenting TLS["certificate"] (key TLS["key"]) and
    trusting exactly the part's server certificate
    TLS["server_certificate"]: pinned, so the name the server is reached
    by does not matter."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=tls["server_certificate"])
        context.load_cert_chain(tls["certificate"], tls["key"])
    except (OSError, ssl.SSLError) as e:
        raise TLSError(
            f"cannot load the TLS files ({tls['certificate']}, {tls['key']},"
            f" {tls['server_certificate']}): {e.strerror or e}; rerun "
            "bin/buildout")
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def connect(sock, where, tls):
    """Wrap the connected SOCK in TLS and read the server's first message
    (ZEO's server speaks first).  Returns (TLS socket, message); raises
    TLSError saying why the server at WHERE refused."""
    context = client_context(tls)
    conn = None
    try:
        conn = context.wrap_socket(sock)
        return conn, first_message(conn)
    except (OSError, EOFError) as e:
        if conn is not None:
            conn.close()
        raise TLSError(explain(e, where, tls)) from None


def explain(error, where, tls):
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"the ZEO server at {where} presented a certificate other "
                f"than the part's ssl-certificate "
                f"({tls['server_certificate']}): {error.verify_message}; "
                "restart it if its certificate changed")
    if isinstance(error, socket.timeout):
        return (f"the ZEO server at {where} did not complete a TLS "
                "handshake in time; see the server log")
    refused = (f"the ZEO server at {where} refused the client certificate "
               f"{tls['certificate']} (its log says why); list it in the "
               "server's authentication-database and restart the server")
    reason = getattr(error, "reason", None)
    if isinstance(error, ssl.SSLError) and "ALERT" in (reason or ""):
        return f"{refused} [{reason}]"
    if isinstance(error, ssl.SSLError) and not isinstance(
            error, ssl.SSLEOFError):
        return (f"the ZEO server at {where} does not speak TLS "
                f"({reason or error}); is it still running with an older "
                "configuration? restart it")
    if isinstance(error, (EOFError, ssl.SSLEOFError, ConnectionResetError)):
        return refused
    return (f"TLS connection to the ZEO server at {where} failed: "
            f"{error.strerror or error}")


def first_message(conn):
    """The whole first message (4 bytes of size, then the protocol
    version).  Reading all of it matters: closing with unread data resets
    the connection, which the server logs as an error."""
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        chunk = conn.recv(256)
        if not chunk:
            raise EOFError("closed before its first message")
        data += chunk
    return data[4:]
