"""bin/zeopack: pack the part's ZEO server with the part's defaults.

Unlike ZEO's zeopack it never hangs: a server that is down, does not
serve the storage asked for, or refuses our TLS client certificate, is
reported in one line within a bound.  While the server packs, a line on
the terminal (stderr) shows how far it got; at the end one line on
stdout says what the pack did.
"""

import contextlib
import logging
import os
import runpy
import socket
import sys
import time

from plone.recipe.zope2zeoserver import resolved
from plone.recipe.zope2zeoserver import tlsclient
from plone.recipe.zope2zeoserver.arguments import ArgumentParser
from plone.recipe.zope2zeoserver.arguments import non_negative
from plone.recipe.zope2zeoserver.addresses import client_address
from plone.recipe.zope2zeoserver.addresses import describe
from plone.recipe.zope2zeoserver.files import file_size


CONNECT_TIMEOUT = 10  # seconds to wait for the server to accept the storage
INTERRUPTED = 130  # the exit status of a command Ctrl-C ended (128 + SIGINT)


class PackError(Exception):
    """A problem the user can fix; its text is the whole message."""


class Interrupted(Exception):
    """Ctrl-C while the server packed; the text says what goes on."""


def parse_args(args, defaults):
    parser = ArgumentParser(
        prog=os.path.basename(sys.argv[0]),
        description="Pack the ZEO server of this buildout part: remove "
                    "object revisions (and blobs) older than DAYS days.")
    parser.add_argument(
        "-d", "-D", "--days", type=non_negative, default=defaults["days"],
        help="keep this many days of history (default: %(default)s, the "
             "part's pack-days)")
    parser.add_argument(
        "-S", "--storage", default=defaults["storage"],
        help="name of the storage to pack (default: %(default)s)")
    parser.add_argument(
        "-B", "--blob-dir", default=None,
        help="accepted for compatibility with 1.x; the server packs its "
             "own blobs")
    parser.add_argument(
        "--timeout", type=non_negative, default=CONNECT_TIMEOUT,
        help="seconds to wait for the server (default: %(default)s)")
    return parser.parse_args(args)


def check_reachable(address, tls=None):
    """Fail at once, not after the timeout, when nothing listens or (with
    TLS) the server refuses us: ZEO's client would retry until the timeout
    and then only say that it timed out."""
    family, reachable = client_address(address)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(reachable)
        except OSError as e:
            raise PackError(
                f"cannot connect to the ZEO server at {describe(address)}: "
                f"{e.strerror or e}; is it running?")
        if tls is not None:
            conn, _ = tlsclient.connect(s, describe(address), tls)
            conn.close()


class Refusals(logging.Handler):
    """Catches the ZEO client's report that the server refused to
    register it, e.g. for a storage it does not have.  The client only
    logs that, and asks again ~10 s later, until our timeout."""

    LOGGER = "ZEO.asyncio.client"
    MESSAGE = "Registration or cache validation failed"

    def __init__(self):
        super().__init__(logging.ERROR)
        self.refusal = None

    def emit(self, record):
        if record.exc_info and str(record.msg).startswith(self.MESSAGE):
            self.refusal = record.exc_info[1]

    @contextlib.contextmanager
    def watching(self):
        """Catch refusals meanwhile; they are not printed (the outcome
        is reported in one line instead of the client's traceback)."""
        logger = logging.getLogger(self.LOGGER)
        level, propagate = logger.level, logger.propagate
        logger.setLevel(logging.ERROR)
        logger.propagate = False
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = propagate


def refusal_reason(error):
    """The server's reason in ERROR, a ZEO ServerException("module.Class",
    args) as the client receives it, or any exception."""
    from ZEO.Exceptions import ServerException

    if (isinstance(error, ServerException) and len(error.args) == 2
            and isinstance(error.args[1], tuple)):
        return " ".join(str(arg) for arg in error.args[1]) or error.args[0]
    return str(error) or type(error).__name__


def pack(address, storage, days, timeout, tls=None,
         meanwhile=contextlib.nullcontext):
    """Pack STORAGE on the server at ADDRESS, keeping DAYS of history.

    TLS: the client certificate, its key and the server's certificate
    (paths), when the server requires TLS.  MEANWHILE(): a context
    manager around the server's packing (e.g. a progress line)."""
    import ZEO.ClientStorage

    ssl_options = {}
    if tls is not None:
        ssl_options = {"ssl": tlsclient.client_context(tls)}
    check_reachable(address, tls)
    with Refusals().watching() as refusals:
        client = ZEO.ClientStorage.ClientStorage(
            address, storage=storage, wait=False, read_only=True,
            **ssl_options)
        try:
            deadline = time.monotonic() + timeout
            while not client.is_connected():
                if refusals.refusal is not None:
                    raise PackError(
                        f"the ZEO server at {describe(address)} refused "
                        f"access to storage {storage!r}: "
                        f"{refusal_reason(refusals.refusal)}; check the "
                        "storage name (-S) and the server log")
                if time.monotonic() > deadline:
                    raise PackError(
                        f"the ZEO server at {describe(address)} did not "
                        f"give access to storage {storage!r} within "
                        f"{timeout:g} s; check the storage name (-S) and "
                        "the server log")
                time.sleep(0.01)  # a pack takes seconds; waiting adds up
            with meanwhile():
                try:
                    client.pack(time.time(), wait=True, days=days)
                except KeyboardInterrupt:
                    # The server packs on its own: only we stop waiting.
                    raise Interrupted(
                        f"interrupted; the server goes on packing storage "
                        f"{storage!r} until it is done (its log says when)")
        finally:
            client.close()


def main(zeo_conf, buildout_dir, args=None, script=None):
    """Entry point of bin/zeopack: the part's server and defaults come
    from its resolved.conf.  SCRIPT: a 1.x-style zeopack (the zeopack
    option) to run with them instead."""
    if args is None:
        args = sys.argv[1:]
    try:
        conf = resolved.load(zeo_conf, buildout_dir)
    except resolved.Unusable as e:
        print(f"zeopack: {e}", file=sys.stderr)
        return 1
    if conf.changed:
        print(f"zeopack: {conf.changed_note()}", file=sys.stderr)
    if script:
        return run_script(script, script_defaults(conf), args)
    address, tls = conf.address, conf.tls
    options = parse_args(args, {"storage": conf.storages[0],
                                "days": conf.pack_days})
    # ZEO reports connection attempts at INFO; keep the output to results.
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    # While it retries, ZEO logs every refused registration (e.g. an
    # unknown storage) with a traceback; the outcome is reported below in
    # one line instead.
    logging.getLogger("ZEO").setLevel(logging.CRITICAL)
    watch = PackWatch(options.storage, conf.files.get(options.storage),
                      conf.blob_dirs.get(options.storage))
    try:
        pack(address, options.storage, options.days, options.timeout, tls,
             watch.ticker)
    except (PackError, tlsclient.TLSError) as e:
        print(f"zeopack: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"zeopack: {e}", file=sys.stderr)
        # The client's pending answer is dropped at exit: asyncio would
        # log it with a traceback.
        logging.disable(logging.CRITICAL)
        return INTERRUPTED
    except KeyboardInterrupt:
        print("zeopack: interrupted before the server was asked to pack; "
              "nothing changed", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:
        # Errors raised by the server (e.g. a storage that cannot pack).
        print(f"zeopack: packing storage {options.storage!r} at "
              f"{describe(address)} failed: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print(f"packed storage {options.storage!r} at {describe(address)}, "
          f"keeping {options.days:g} day(s) of history: {watch.summary()}")
    return 0


class PackWatch:
    """What a pack does to the storage's files, where they are on this
    machine (the paths of resolved.conf exist): the FileStorage writes
    the packed copy to PATH.pack, then renames it to PATH; the blob
    files no longer referenced go."""

    def __init__(self, storage, path, blob_dir):
        from plone.recipe.zope2zeoserver import progress

        self.started = time.monotonic()
        self.label = f"packing storage {storage!r}"
        self.path = path if path and os.path.isfile(path) else None
        self.before = file_size(self.path)
        self.packed = progress.NewFile(f"{self.path}.pack") \
            if self.path else None
        self.first_size = None  # of the packed copy, once seen
        self.blob_dir = blob_dir
        self.blobs_before = blob_count(blob_dir)

    def state(self):
        """(label, bytes of the packed copy written, the file's size).
        The server makes the copy as it starts, then reads the whole file
        for what is still referenced before it copies anything: the bytes
        count once the copy grows past its first size."""
        written = self.packed and self.packed.size()
        if written is not None:
            if self.first_size is None:
                self.first_size = written
            if written <= self.first_size:
                written = None
        return self.label, written, self.before

    def ticker(self):
        """The progress line on stderr, while it is a terminal."""
        from plone.recipe.zope2zeoserver import progress
        return progress.Ticker(sys.stderr, self.state)

    def summary(self):
        """What the pack did, from its start until now."""
        after = file_size(self.path)
        return pack_summary(
            self.before, after, self.blob_dir is not None,
            self.blobs_before, blob_count(self.blob_dir),
            time.monotonic() - self.started)


def blob_count(directory):
    """How many blob files DIRECTORY holds; None when it is not here."""
    if not directory or not os.path.isdir(directory):
        return None
    return sum(name.endswith(".blob")
               for _, _, names in os.walk(directory) for name in names)


def pack_summary(before, after, has_blobs, blobs_before, blobs_after,
                 seconds):
    """'4.1 MB -> 312.0 KB, 2 of 3 blob(s) removed, 1.2 s'.  BEFORE,
    AFTER: the file's sizes, None where it is not on this machine; the
    blobs likewise, when the storage HAS_BLOBS."""
    from plone.recipe.zope2zeoserver.progress import elapsed_text
    from plone.recipe.zope2zeoserver.progress import size_text

    if before is None or after is None:
        parts = ["its file is not on this machine"]
    else:
        parts = [f"{size_text(before)} -> {size_text(after)}"]
    if has_blobs:
        if blobs_before is None or blobs_after is None:
            parts.append("its blobs are not on this machine")
        else:
            removed = max(0, blobs_before - blobs_after)
            parts.append(f"{removed} of {blobs_before} blob(s) removed")
    parts.append(elapsed_text(seconds))
    return ", ".join(parts)


def script_defaults(conf):
    """The arguments 1.x gave its zeopack script: where the server
    listens, the first storage, pack-days and that storage's blobs."""
    _, address = client_address(conf.address)
    if isinstance(address, str):
        where = ["-U", address]
    else:
        where = ["-h", address[0], "-p", str(address[1])]
    storage = conf.storages[0]
    defaults = where + ["-S", storage, "-d", f"{conf.pack_days:g}"]
    if storage in conf.blob_dirs:
        defaults += ["-B", conf.blob_dirs[storage]]
    return defaults


def run_script(script, default_args=(), args=None):
    """Run a 1.x-style external script (e.g. from zope2-location's
    utilities/ZODBTools) as __main__ with the part's path and defaults."""
    if args is None:
        args = sys.argv[1:]
    sys.argv = [script] + list(default_args) + list(args)
    runpy.run_path(script, run_name="__main__")
    return 0
