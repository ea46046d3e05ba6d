"""zc.zrs on ZODB 6: the compatibility layer, and the primary and
secondary storages the <zrs> section opens.

zc.zrs 3.1.0 (2017) is the newest release of ZRS; its repository has
nothing newer that runs on ZODB 6.  On ZODB 6.4 / ZEO 6.2 it replicates
but for one thing: its secondary passes FileStorage's ``tpc_begin`` a
transaction object of its own (``zc.zrs.secondary.Transaction``) that
lacks the ``extension_bytes`` ZODB 5.6 and later read.  The first
replicated transaction then fails with AttributeError, after
``tpc_begin`` took the storage's commit lock, so the secondary hangs at
the next one.  `patch` makes it build ZODB's own TransactionMetaData,
which is what ZODB's storages expect.  The patch is applied when a
replicated storage opens, and only then, and is tested with the zc.zrs
versions in TESTED (setup.py's ``zrs`` extra pins them).

Besides, the classes below give the server what zc.zrs lacks: a
replicate-to address that is in use stops the start with a message
(zc.zrs would log it in its network thread and run without listening),
a secondary reconnects after `reconnect-delay` seconds (zc.zrs: 60) and
reports its replication state to `bin/<part> stats`.
"""

import concurrent.futures
import contextlib
import importlib.metadata
import logging
import time

import zc.zrs.primary
import zc.zrs.secondary
from ZODB.Connection import TransactionMetaData
from ZODB.TimeStamp import TimeStamp

from plone.recipe.zope2zeoserver.addresses import describe
from plone.recipe.zope2zeoserver.addresses import remove_stale_socket


logger = logging.getLogger("plone.recipe.zope2zeoserver.zrscompat")

TESTED = ("3.1.0",)
LISTEN_TIMEOUT = 30  # seconds for zc.zrs's network thread to listen


class CannotListen(Exception):
    """A primary cannot listen for its secondaries; the message says why
    (`replication.ZRS.open` reports it as a ReplicationError)."""


def transaction_metadata(tid, status, user, description, extension):
    """What zc.zrs's secondary builds for each replicated transaction
    (its `Transaction(tid, status, user, description, extension)`), as
    ZODB's TransactionMetaData, which has ``extension_bytes``."""
    metadata = TransactionMetaData(user, description, extension)
    metadata.id = tid
    metadata.status = status
    return metadata


def patch():
    """Make zc.zrs's secondary work on ZODB 5.6+.  Idempotent."""
    if zc.zrs.secondary.Transaction is transaction_metadata:
        return
    version = importlib.metadata.version("zc.zrs")
    if version not in TESTED:
        logger.warning("zc.zrs %s is not one of the versions this "
                       "compatibility layer is tested with (%s)", version,
                       ", ".join(TESTED))
    zc.zrs.secondary.Transaction = transaction_metadata


def open_storage(config):
    """The storage of a <zrs> section (replication.ZRS), replicated."""
    patch()
    storage = config.base.open()
    # One state for both roles of a secondary that has secondaries.
    state = {}
    try:
        if config.replicate_to is not None:
            storage = Primary(storage, config.replicate_to.address, state)
        if config.replicate_from is not None:
            storage = Secondary(
                storage, config.replicate_from.address, state,
                keep_alive_delay=config.keep_alive_delay,
                reconnect_delay=config.reconnect_delay)
    except BaseException:
        storage.close()
        raise
    return storage


class Primary(zc.zrs.primary.Primary):
    """zc.zrs's primary, failing when it cannot listen, and counting its
    secondaries in `replication_state` (its STATE) for the statistics."""

    def __init__(self, storage, address, state):
        if isinstance(address, str):
            # One in use: listening fails below, and says so.
            with contextlib.suppress(OSError):
                remove_stale_socket(address)
        self.replication_state = state
        state["secondaries"] = 0
        self.listening = concurrent.futures.Future()
        super().__init__(storage, address)
        try:
            self.listening.result(LISTEN_TIMEOUT)
        except Exception as e:
            reason = getattr(e, "socketError", None) or e
            reason = getattr(reason, "strerror", None) or reason
            raise CannotListen(
                f"cannot listen for secondaries on replicate-to "
                f"{describe(address)}: {reason}; stop what uses it or "
                "change replicate-to")

    def cfr_listen(self):
        # In zc.zrs's network thread, before any secondary can connect.
        self._factory.protocol = PrimaryProtocol
        self._factory.primary = self
        try:
            super().cfr_listen()
        except Exception as e:
            self.listening.set_exception(e)
        else:
            self.listening.set_result(None)


class PrimaryProtocol(zc.zrs.primary.PrimaryProtocol):
    """zc.zrs's replication server, one per secondary, counted."""

    def connectionMade(self):
        super().connectionMade()
        self.count()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.count()

    def count(self):
        state = self.factory.primary.replication_state
        state["secondaries"] = len(self.factory.instances)


class SecondaryProtocol(zc.zrs.secondary.SecondaryProtocol):
    """zc.zrs's replication client, telling its Secondary what happens."""

    def connectionMade(self):
        super().connectionMade()
        self.factory.secondary.connected(True)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.secondary.connected(False)

    def messageReceived(self, message):
        in_transaction = self._zrs_transaction is not None
        super().messageReceived(message)
        if in_transaction and self._zrs_transaction is None:
            self.factory.secondary.replicated()


class SecondaryFactory(zc.zrs.secondary.SecondaryFactory):
    protocol = SecondaryProtocol
    # Twisted would log two lines for every attempt to reach a primary
    # that is down, once a second.
    noisy = False


class Secondary(zc.zrs.secondary.Secondary):
    """zc.zrs's secondary, keeping `replication_state` up to date: the
    server puts it in its statistics (runzeo.Server.create_server)."""

    factoryClass = SecondaryFactory

    def __init__(self, storage, address, state, **kw):
        # Fixed keys, values replaced in place: the server's thread may
        # be encoding it as JSON meanwhile.
        self.replication_state = state
        state.update(primary=describe(address), connected=False,
                     since=time.time(), replicated_at=None, lag=None)
        super().__init__(storage, address, **kw)

    def connected(self, connected):
        self.replication_state["connected"] = connected
        self.replication_state["since"] = time.time()

    def replicated(self):
        """A transaction from the primary is committed here: how long
        after its commit there (the clocks of both machines agreeing)."""
        now = time.time()
        committed = TimeStamp(self.lastTransaction()).timeTime()
        self.replication_state["replicated_at"] = now
        self.replication_state["lag"] = round(max(0.0, now - committed), 6)
