"""The server's acceptor: ZEO's, naming every client too old to serve.

A ZEO 6 server speaks protocol 5 only.  A ZEO 4 client (Plone 5.1 and
older on Python 2) or ZEO 3.10 client (Plone 4) answers its handshake
with its own older protocol, and ZEO just logs "bad handshake 'Z4'" at
ERROR, without saying who asked, several times a second, forever: the
old client retries.  Here that client is named at WARNING with what it
needs, at once and then at most once a minute (`Warnings`); ZEO still
closes the connection.  The `ruok` probe and good handshakes are ZEO's
own.  `create_server` builds ZEO's server with this acceptor, or with
`tlsserver`'s (which extends it) when zeo.conf has an <ssl> section.
"""

import logging
import os
import time

import ZEO.asyncio.server
import ZEO.StorageServer

from plone.recipe.zope2zeoserver.addresses import describe


logger = logging.getLogger("ZEO.handshake")

OLD_CLIENT = ("client {peer} asked for ZEO protocol {reason}; this server "
              "speaks protocol 5 only: the client needs ZEO 5 or newer "
              "(Plone 5.2 or newer)")


def create_server(storages, options):
    """ZEO's runzeo.create_server, with our `Acceptor`, or with
    `tlsserver.Acceptor` (TLS handshakes that log a refusal) when zeo.conf
    has an <ssl> section."""
    factory = Acceptor
    if options.ssl is not None:
        # Here, not at the top: tlsserver imports this module.
        from plone.recipe.zope2zeoserver import tlsserver
        factory = tlsserver.Acceptor
    # The arguments of ZEO 6's runzeo.create_server, plus Acceptor.
    return ZEO.StorageServer.StorageServer(
        options.address,
        storages,
        read_only=options.read_only,
        client_conflict_resolution=options.client_conflict_resolution,
        msgpack=(options.msgpack if isinstance(options.msgpack, bool)
                 else os.environ.get('ZEO_MSGPACK')),
        invalidation_queue_size=options.invalidation_queue_size,
        invalidation_age=options.invalidation_age,
        transaction_timeout=options.transaction_timeout,
        ssl=options.ssl,
        Acceptor=factory)


class Acceptor(ZEO.asyncio.server.Acceptor):
    """ZEO's acceptor, whose connections speak `ServerProtocol`."""

    def __init__(self, storage_server, addr, ssl, msgpack):
        self.old_clients = Warnings(OLD_CLIENT)
        super().__init__(storage_server, addr, ssl, msgpack)

    def factory(self):
        # ZEO's factory, with our protocol class.
        try:
            return ServerProtocol(
                self.event_loop, self.addr,
                self.storage_server.create_client_handler(), self.msgpack,
                self.old_clients)
        except Exception:
            logger.exception("Failure in protocol factory")
            raise


class ServerProtocol(ZEO.asyncio.server.ServerProtocol):
    """ZEO's protocol; a handshake in a protocol it does not speak is
    reported to OLD_CLIENTS (a `Warnings`) instead of ZEO's anonymous
    "bad handshake" error."""

    def __init__(self, loop, addr, zeo_storage, msgpack, old_clients):
        super().__init__(loop, addr, zeo_storage, msgpack)
        self.old_clients = old_clients

    def finish_connection(self, protocol_version):
        if (protocol_version == b"ruok"
                or protocol_version[1:] in self.protocols):
            return super().finish_connection(protocol_version)
        self.old_clients.report(peer_text(self.get_peername()),
                                client_text(protocol_version))
        self.close()


def client_text(protocol_version):
    """The protocol an unserved client asked for and, where known, which
    clients ask for it, e.g. "Z4 (a ZEO 4 client, ...)"."""
    text = protocol_version[:20].decode("ascii", "backslashreplace")
    if protocol_version.startswith(b"Z4"):
        return f"{text} (a ZEO 4 client, e.g. Plone 5.0 or 5.1)"
    if protocol_version.startswith(b"Z3"):
        return f"{text} (a ZEO 3 client, e.g. Plone 4)"
    return text


class Warnings:
    """Logs a TEMPLATE (str.format with `peer` and `reason`) at WARNING
    without flooding the log: a refused ZEO client retries several times a
    second, forever, so each (host, reason) is reported at once and then
    at most once a minute, with the number of repeats in between."""

    interval = 60

    def __init__(self, template, logger=logger):
        self.template = template
        self.logger = logger
        self.seen = {}  # (host, reason) -> [time last logged, count since]

    def report(self, peer, reason):
        key = (peer.rpartition(":")[0], reason)
        now = time.monotonic()
        last = self.seen.get(key)
        if last and now - last[0] < self.interval:
            last[1] += 1
            return
        repeated = (f" ({last[1]} more from this host since the last "
                    "report)" if last and last[1] else "")
        if len(self.seen) > 1000:  # many hosts: forget the quiet ones
            self.seen = {k: v for k, v in self.seen.items()
                         if now - v[0] < self.interval}
        self.seen[key] = [now, 0]
        self.logger.warning(
            "%s%s", self.template.format(peer=peer, reason=reason), repeated)


def peer_text(peer):
    """A connection's peername as people write it: HOST:PORT, [IPv6]:PORT
    or "a unix socket client"."""
    if isinstance(peer, tuple):
        return describe(peer[:2])
    return "a unix socket client"
