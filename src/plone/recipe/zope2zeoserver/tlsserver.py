"""The server side of TLS: every refused client shows up in the log.

ZEO hands its SSL context to asyncio's create_server, and asyncio reports
a failed handshake only in debug mode: at the normal log level a refused
client (no certificate, an untrusted or expired one, no TLS at all)
leaves no trace on the server and just times out on the client.  Here the
listening socket is plain TCP and each connection's handshake is done
with `loop.start_tls`, so its outcome is ours to log: a refusal at
WARNING with the peer's address and the reason, then ZEO's own protocol
takes over the TLS transport exactly as if asyncio had made it (our
`acceptor.ServerProtocol`, so a client too old to serve is named too).
`acceptor.create_server` uses this module's `Acceptor` for an <ssl>
section.
"""

import asyncio
import logging
import ssl

from plone.recipe.zope2zeoserver import acceptor
from plone.recipe.zope2zeoserver.acceptor import peer_text


logger = logging.getLogger("ZEO.tls")

# A client that opens a connection and says nothing (a ZEO client without
# TLS waits for the server to speak first) is dropped after this long.
HANDSHAKE_TIMEOUT = 10


class Acceptor(acceptor.Acceptor):
    """Our acceptor listening on plain TCP; each connection starts with
    a `Handshake` that upgrades it to TLS."""

    def __init__(self, storage_server, addr, ssl_context, msgpack):
        # A certificate listed in authentication-database is trusted
        # itself, whoever signed it: that is what "only these clients"
        # means, and Python 3.13's default contexts do the same.
        ssl_context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        self.tls_context = ssl_context
        self.handshakes = set()  # running tasks need a strong reference
        self.refusals = acceptor.Warnings(
            "refused TLS connection from {peer}: {reason}", logger)
        super().__init__(storage_server, addr, None, msgpack)
        self.ssl_context = ssl_context

    def factory(self):
        return Handshake(self, super().factory)


class Handshake(asyncio.Protocol):
    """The first protocol of a connection: runs the TLS handshake, logs a
    refusal, and on success hands the TLS transport to ZEO's protocol.

    Events that asyncio scheduled for this protocol before the hand-over
    are passed on, so ZEO's protocol sees the connection's whole life."""

    def __init__(self, acceptor, zeo_factory):
        self.acceptor = acceptor
        self.zeo_factory = zeo_factory
        self.zeo = None
        self.pending = []  # events before the hand-over
        self.lost = False

    def connection_made(self, transport):
        # start_tls runs before the socket is first read: the selector
        # transport starts reading in the loop iteration after this one.
        task = self.acceptor.event_loop.create_task(self.handshake(transport))
        self.acceptor.handshakes.add(task)
        task.add_done_callback(self.acceptor.handshakes.discard)

    async def handshake(self, transport):
        peer = peer_text(transport.get_extra_info("peername"))
        try:
            tls = await self.acceptor.event_loop.start_tls(
                transport, self, self.acceptor.tls_context, server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except ssl.SSLError as e:
            self.acceptor.refusals.report(peer, refusal_reason(e))
            return
        except ConnectionAbortedError:
            self.acceptor.refusals.report(
                peer, f"no TLS handshake within {HANDSHAKE_TIMEOUT} s (a "
                "client without TLS?)")
            return
        except (OSError, RuntimeError) as e:
            # Closed before saying anything: port probes, or `bin/zeo
            # start` checking that the server accepts connections.
            logger.debug("connection from %s closed before the TLS "
                         "handshake: %r", peer, e)
            return
        if tls is None or self.lost:
            logger.debug("connection from %s closed right after the TLS "
                         "handshake", peer)
            return
        logger.info("TLS client %s: %s", peer,
                    subject_text(tls.get_extra_info("peercert")))
        self.zeo = self.zeo_factory()
        tls.set_protocol(self.zeo)
        self.zeo.connection_made(tls)
        for method, args in self.pending:
            getattr(self.zeo, method)(*args)

    def data_received(self, data):
        self.relay("data_received", data)

    def eof_received(self):
        self.relay("eof_received")
        return True  # closing is then up to ZEO's protocol

    def connection_lost(self, exc):
        self.lost = True
        if self.zeo is not None:
            self.zeo.connection_lost(exc)

    def relay(self, method, *args):
        if self.zeo is None:
            self.pending.append((method, args))
        else:
            getattr(self.zeo, method)(*args)


def refusal_reason(error):
    """What went wrong, in the words an administrator needs."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"client certificate not accepted: {error.verify_message}; "
                "only certificates listed in authentication-database (or "
                "signed by a CA listed there) are")
    reason = error.reason or str(error)
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "the client sent no certificate"
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST",
                  "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"):
        return f"the client does not speak TLS ({reason})"
    return reason


def subject_text(cert):
    """The client certificate's subject, e.g. "CN=zeopack"."""
    if not cert:
        return "no certificate"
    return ", ".join(f"{'CN' if key == 'commonName' else key}={value}"
                     for rdn in cert.get("subject", ())
                     for key, value in rdn)
