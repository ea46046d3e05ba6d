"""The listeners that serve a live ZEO server's figures (figures.py) on
monitor-address and metrics-address.

ZEO 5 dropped 1.5's monitor server.  `runzeo.py` serves, from inside the
server process, the 1.5 monitor text (so old monitoring scripts keep
working) and Prometheus text over HTTP; `stats.py` asks a running
server for the same figures with ZEO's `ruok` handshake.
"""

import asyncio
import collections
import contextlib
import errno
import logging
import os
import socket
import threading


from plone.recipe.zope2zeoserver.addresses import describe
from plone.recipe.zope2zeoserver.addresses import family
from plone.recipe.zope2zeoserver.addresses import remove_stale_socket
from plone.recipe.zope2zeoserver.figures import metrics_text
from plone.recipe.zope2zeoserver.figures import monitor_text


logger = logging.getLogger("plone.recipe.zope2zeoserver.monitor")

REPLY_TIMEOUT = 5  # seconds a client gets to send its request and take the reply
MAX_CONNECTIONS = 64  # per listener; beyond, the oldest connection is dropped
MAX_LINE = 8192  # bytes of one HTTP request line or header
MAX_HEADERS = 100
BACKLOG = 1024  # a burst of monitor connections waits in the kernel
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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
    body = metrics_text(statuses(storage_server))
    return http_response("200 OK", body, PROMETHEUS_TYPE,
                         head_only=method == "HEAD")


def statuses(storage_server):
    """ZEO's `server_status` of every storage, with its size in bytes
    (`getSize()`, as ZODB's DB.getSize(); not part of ZEO's status)."""
    found = storage_server.ruok()
    for name, status in found.items():
        try:
            status["size"] = storage_server.storages[name].getSize()
        except Exception:
            # One figure missing rather than the whole scrape failing.
            logger.debug("size of storage %r unknown", name, exc_info=True)
    return found


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
