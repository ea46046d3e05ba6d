"""Live statistics of a ZEO server: the figures, their three forms, and
the listeners that serve them on monitor-address and metrics-address.

ZEO 5 dropped 1.5's monitor server.  The figures themselves are still
kept by the live `StorageServer` (`server_status`, per storage); this
module turns them into the 1.5 monitor text (so old monitoring scripts
keep working), JSON and Prometheus text.  `runzeo.py` serves them from
inside the server process; `stats.py` asks a running server for the same
figures with ZEO's `ruok` handshake.
"""

import asyncio
import collections
import contextlib
import errno
import importlib.metadata
import io
import logging
import os
import socket
import threading
import time

import ZEO.monitor
from ZODB.TimeStamp import TimeStamp

from plone.recipe.zope2zeoserver.addresses import describe
from plone.recipe.zope2zeoserver.addresses import family
from plone.recipe.zope2zeoserver.addresses import remove_stale_socket


logger = logging.getLogger("plone.recipe.zope2zeoserver.monitor")

REPLY_TIMEOUT = 5  # seconds a client gets to send its request and take the reply
MAX_CONNECTIONS = 64  # per listener; beyond, the oldest connection is dropped
MAX_LINE = 8192  # bytes of one HTTP request line or header
MAX_HEADERS = 100
BACKLOG = 1024  # a burst of monitor connections waits in the kernel
NO_TRANSACTION = "0" * 16  # last-transaction of an empty storage

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Prometheus name, type, help, and the key of `figures()` (or of
# `replication_figures()`) it shows.
METRICS = (
    ("zeo_commits_total", "counter", "Transactions committed.", "commits"),
    ("zeo_aborts_total", "counter", "Transactions aborted.", "aborts"),
    ("zeo_loads_total", "counter", "Object loads served.", "loads"),
    ("zeo_stores_total", "counter", "Object revisions stored.", "stores"),
    ("zeo_conflicts_total", "counter", "Write conflicts.", "conflicts"),
    ("zeo_conflicts_resolved_total", "counter",
     "Write conflicts resolved by the server.", "conflicts_resolved"),
    ("zeo_clients", "gauge", "Connected clients.", "clients"),
    ("zeo_active_transactions", "gauge", "Transactions in progress.",
     "active_transactions"),
    ("zeo_waiting_transactions", "gauge",
     "Transactions waiting for the commit lock.", "waiting_transactions"),
    ("zeo_commit_lock_held_seconds", "gauge",
     "Seconds the commit lock has been held; 0 when it is free.",
     "commit_lock_seconds"),
    ("zeo_seconds_since_last_transaction", "gauge",
     "Seconds since the last committed transaction; absent for an empty "
     "storage.", "seconds_since_last_transaction"),
    ("zeo_replication_secondaries", "gauge",
     "ZRS secondaries connected to this primary; absent on other servers.",
     "replication_secondaries"),
    ("zeo_replication_connected", "gauge",
     "1 while this ZRS secondary is connected to its primary, else 0; "
     "absent on other servers.", "replication_connected"),
    ("zeo_replication_lag_seconds", "gauge",
     "Seconds from the commit on the primary to the arrival here of the "
     "last transaction replicated; absent before the first one and on "
     "other servers.", "replication_lag_seconds"),
)


# -- the figures ---------------------------------------------------------

def figures(status, now=None):
    """One storage's `server_status` dict as named plain values: the
    schema of `stats --json`, and what the metrics and checks read."""
    now = time.time() if now is None else now
    lock_time = status.get("lock_time")
    tid = status.get("last-transaction") or NO_TRANSACTION
    last = (None if tid == NO_TRANSACTION
            else TimeStamp(bytes.fromhex(tid)).timeTime())
    return {
        "started": status["start"],
        "clients": status["connections"],
        # ZEO 5+ clients verify their caches themselves.
        "clients_verifying": status.get("verifying_clients", 0),
        "active_transactions": status["active_txns"],
        "waiting_transactions": status.get("waiting", 0),
        "commit_lock_seconds": round(max(0.0, now - lock_time), 3)
        if lock_time else 0.0,
        "commits": status["commits"],
        "aborts": status["aborts"],
        "loads": status["loads"],
        "stores": status["stores"],
        "conflicts": status["conflicts"],
        "conflicts_resolved": status["conflicts_resolved"],
        "last_transaction": None if last is None else tid,
        "last_transaction_time": last,
        "seconds_since_last_transaction":
            None if last is None else round(max(0.0, now - last), 3),
    }


def replication_figures(status):
    """The replication state of a ZRS primary or secondary (zrscompat, in
    its `server_status`) as metric values; none on other servers."""
    state = status.get("replication") or {}
    figures = {}
    if "secondaries" in state:
        figures["replication_secondaries"] = state["secondaries"]
    if "connected" in state:
        figures["replication_connected"] = int(state["connected"])
        figures["replication_lag_seconds"] = state["lag"]
    return figures


def storage_block(name, status):
    """`Storage: NAME` and ZEO's own `StorageStats.dump` lines: written by
    the class that parses them, the 1.5 format cannot drift."""
    stats = ZEO.monitor.StorageStats(connections=range(status["connections"]))
    for attribute in ("start", "loads", "stores", "commits", "aborts",
                      "active_txns", "lock_time", "conflicts",
                      "conflicts_resolved"):
        setattr(stats, attribute, status[attribute])
    stats.verifying_clients = status.get("verifying_clients", 0)
    out = io.StringIO()
    print("Storage:", name, file=out)
    stats.dump(out)
    return out.getvalue()


def monitor_text(statuses):
    """What 1.5's monitor server sent: version, time, a blank line, then
    each storage's block followed by a blank line."""
    version = importlib.metadata.version("ZEO")
    lines = [f"ZEO monitor server version {version}\n", time.ctime() + "\n",
             "\n"]
    for name in sorted(statuses):
        lines += [storage_block(name, statuses[name]), "\n"]
    return "".join(lines)


def stats_text(statuses, now=None):
    """The monitor blocks, plus what only ZEO 5+ knows, for people."""
    now = time.time() if now is None else now
    blocks = []
    for name in sorted(statuses):
        values = figures(statuses[name], now)
        block = storage_block(name, statuses[name])
        block += f"Waiting transactions: {values['waiting_transactions']}\n"
        if values["last_transaction_time"] is None:
            block += "Last transaction: none (empty storage)\n"
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(
                values["last_transaction_time"]))
            block += (f"Last transaction: {when} "
                      f"({values['seconds_since_last_transaction']:.0f} s "
                      "ago)\n")
        blocks.append(block)
    return "\n".join(blocks)


def metrics_text(statuses, now=None):
    """The Prometheus text exposition (format 0.0.4) of every storage."""
    now = time.time() if now is None else now
    values = {name: {**figures(status, now), **replication_figures(status)}
              for name, status in statuses.items()}
    lines = []
    for metric, kind, text, key in METRICS:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        for name in sorted(values):
            value = values[name].get(key)
            if value is not None:
                lines.append(f'{metric}{{storage="{label(name)}"}} {value}')
    return "\n".join(lines) + "\n"


def label(value):
    """VALUE escaped for a Prometheus label."""
    return (str(value).replace("\\", "\\\\").replace('"', '\\"')
            .replace("\n", "\\n"))


# -- replies ---------------------------------------------------------------

async def monitor_reply(storage_server, reader):
    """1.5 clients send nothing: the reply is due at once."""
    return monitor_text(storage_server.ruok()).encode("utf-8")


async def metrics_reply(storage_server, reader):
    """An HTTP/1.x response to the request READER delivers."""
    request = await reader.readline()
    for _ in range(MAX_HEADERS):
        if (await reader.readline()).strip() == b"":
            break
    else:
        return http_response("431 Request Header Fields Too Large")
    method, target, *_ = request.decode("latin-1").split() + ["", ""]
    if method not in ("GET", "HEAD"):
        return http_response("405 Method Not Allowed", extra="Allow: GET\r\n")
    if target.split("?")[0] != "/metrics":
        return http_response("404 Not Found",
                             "Not found: the metrics are at /metrics\n")
    body = metrics_text(storage_server.ruok())
    return http_response("200 OK", body, PROMETHEUS_TYPE,
                         head_only=method == "HEAD")


def http_response(status, body="", content_type="text/plain; charset=utf-8",
                  extra="", head_only=False):
    data = (body or status + "\n").encode("utf-8")
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("latin-1") + (b"" if head_only else data)


# -- the listener ----------------------------------------------------------

class ListenError(Exception):
    """An address the server cannot listen on; the text says why."""


def listening_socket(address, option):
    """A socket listening on ADDRESS ((host, port) or a unix socket path).

    Bound before the server opens its storages, so an address in use
    stops the start with a message naming OPTION."""
    try:
        if not isinstance(address, str):
            return socket.create_server(address, family=family(address),
                                        backlog=BACKLOG)
        remove_stale_socket(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ListenError(
                f"{option} {describe(address)} is already in use by another "
                f"process; stop that process or change {option}")
        raise ListenError(f"cannot listen on {option} {describe(address)}: "
                          f"{e.strerror or e}")


class Listener:
    """Answers every connection to one address with one reply, then
    closes it, from a thread and event loop of its own.

    The ZEO server never waits for it, and no client can make it wait
    long or hold much: each connection gets REPLY_TIMEOUT seconds in all,
    and at most MAX_CONNECTIONS stay open (the oldest is dropped first).
    """

    def __init__(self, address, option):
        self.address = address
        self.option = option
        self.sock = listening_socket(address, option)
        self.thread = None

    def start(self, respond):
        """Serve: RESPOND(reader) is a coroutine returning the reply."""
        self.respond = respond
        self.open = collections.OrderedDict()
        self.loop = asyncio.new_event_loop()
        self.stopping = asyncio.Event()
        self.thread = threading.Thread(
            target=self.run, name=f"{self.option} {describe(self.address)}",
            daemon=True)
        self.thread.start()

    def run(self):
        try:
            self.loop.run_until_complete(self.serve())
        finally:
            self.loop.close()

    async def serve(self):
        server = await asyncio.start_server(
            self.answer, sock=self.sock, limit=MAX_LINE, backlog=BACKLOG)
        logger.info("serving %s on %s", self.option, describe(self.address))
        await self.stopping.wait()
        server.close()
        for writer in list(self.open):
            writer.transport.abort()

    async def answer(self, reader, writer):
        # The deadline aborts the connection whatever it waits for.  A
        # reply that needs no request (the monitor's) is written before
        # the coroutine first yields, so a burst of connections is served
        # one by one instead of piling up in self.open.
        deadline = self.loop.call_later(REPLY_TIMEOUT, writer.transport.abort)
        self.open[writer] = None
        if len(self.open) > MAX_CONNECTIONS:
            oldest, _ = self.open.popitem(last=False)
            oldest.transport.abort()
        done = False
        try:
            reply = await self.respond(reader)
            # Limit 0: drain() returns once the kernel has all of it.
            writer.transport.set_write_buffer_limits(0)
            writer.write(reply)
            await writer.drain()
            done = True
        except (OSError, ValueError, EOFError, asyncio.IncompleteReadError):
            pass  # the client went away, or was too slow or too chatty
        except Exception:
            logger.exception("%s: answering a client failed", self.option)
        finally:
            deadline.cancel()
            self.open.pop(writer, None)
            if done:
                writer.close()
            else:
                writer.transport.abort()

    def close(self):
        """Stop listening (bounded), and remove a unix socket file."""
        if self.thread is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
            self.thread.join(REPLY_TIMEOUT)
        self.sock.close()
        if isinstance(self.address, str):
            with contextlib.suppress(OSError):
                os.unlink(self.address)
