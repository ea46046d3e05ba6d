"""parts/<part>/bin/runzeo: the ZEO server process.

ZEO's runzeo with the part's zeo.conf baked in, plus the monitor and
metrics listeners ZEO 6 lacks (ZEO 6's zeo.conf has no place for their
addresses, so they are baked in as arguments too).  zdaemon runs this
program; `bin/<part> fg`, systemd or supervisord may run it directly.
"""

import contextlib
import functools
import logging
import os
import sys

import zc.lockfile
import ZEO.runzeo
from ZODB.FileStorage.FileStorage import FileStorageFormatError

from plone.recipe.zope2zeoserver import acceptor
from plone.recipe.zope2zeoserver import python2
from plone.recipe.zope2zeoserver import replication
from plone.recipe.zope2zeoserver.files import blob_loss
from plone.recipe.zope2zeoserver.files import lock_holder
from plone.recipe.zope2zeoserver.files import os_error_text
from plone.recipe.zope2zeoserver.files import BUILDOUT_ENV

logger = logging.getLogger("plone.recipe.zope2zeoserver")

# Exit status for a configuration problem: zdaemon does not restart a
# server that exits with it (exit-codes in zeo.conf's <runner>).
EXIT_CONFIGURATION = 2


class Server(ZEO.runzeo.ZEOServer):
    """ZEO's server, answering statistics on its listeners' addresses."""

    def __init__(self, options, monitor_address=None, metrics_address=None):
        super().__init__(options)
        self.wanted = [("monitor-address", monitor_address, "monitor_reply"),
                       ("metrics-address", metrics_address, "metrics_reply")]
        self.listeners = []  # (Listener, its reply coroutine)

    def check_socket(self):
        """Claim the listeners' addresses before the storages open: one
        in use stops the start at once, naming its option.  Before that,
        refuse to be a second server on a storage (see
        `check_storage_locks`)."""
        self.check_storage_locks()
        super().check_socket()
        for option, address, reply in self.wanted:
            if address is None:
                continue
            # Only here: a server without listeners never imports them.
            from plone.recipe.zope2zeoserver import monitor
            try:
                listener = monitor.Listener(address, option)
            except monitor.ListenError as e:
                self.close_listeners()
                print(f"Error: {e}", file=sys.stderr)
                sys.exit(EXIT_CONFIGURATION)
            self.listeners.append((listener, getattr(monitor, reply)))

    def check_storage_locks(self):
        """Two servers writing one Data.fs corrupt it; FileStorage's lock
        file prevents that, but ZEO only finds out after it has claimed the
        address and rewritten the pid file.  Ask each lock first and refuse
        naming the file and the process holding it.  The lock file itself
        is never removed: it is what keeps the second server out.
        Before that, a file that Python 2 wrote is refused; after it, an
        index that Python 2 wrote is set aside to be rebuilt (ZODB would
        log a traceback loading it)."""
        self.refuse_python2_files()
        self.refuse_blob_loss()
        for _, config in self.written_file_storages():
            if not os.path.exists(config.path + ".lock"):
                continue
            try:
                zc.lockfile.LockFile(config.path + ".lock").close()
            except zc.lockfile.LockError:
                refuse(locked_message(config.path))
        # Only now that no other server holds the files.
        for _, path, _ in replication.file_storages(self.options.storages):
            python2.set_aside_index(path, logger.warning)

    def refuse_blob_loss(self):
        """Blobs without their Data.fs would be deleted as ZODB creates a
        new one (see `blob_loss`): refuse, naming the way out."""
        for name, config in self.written_file_storages():
            reason = blob_loss(config.path, getattr(config, "blob_dir", None),
                               getattr(config, "create", False))
            if reason:
                refuse(f"storage {name}: {reason}")

    def written_file_storages(self):
        """(name, section) of each FileStorage the server will write: with
        a path and not read-only, inside <zrs> sections too."""
        for opener in self.options.storages:
            config = replication.base_config(opener)
            if (getattr(config, "path", None)
                    and not getattr(config, "read_only", False)):
                yield opener.name, config

    def refuse_python2_files(self):
        """ZODB would call a Data.fs that Python 2 wrote "not a FileStorage
        file": refuse it naming the way out."""
        part = os.path.basename(os.path.dirname(os.path.dirname(
            self.options.configfile)))
        refusal = python2.refusal_of(
            (path for _, path, _ in replication.file_storages(
                self.options.storages)), part)
        if refusal:
            refuse(refusal)

    def open_storages(self):
        """ZODB's reasons a storage cannot open, in one line each.  The
        exit status tells zdaemon not to restart a server that would only
        fail the same way."""
        try:
            super().open_storages()
            self.keep_blob_directories_private()
        except FileStorageFormatError as e:
            refuse(f"{e} is not a FileStorage file (its first bytes are "
                   "not a FileStorage header); restore it from a backup "
                   "(bin/repozo -R) or point file-storage at the right file")
        except zc.lockfile.LockError as e:
            # Taken since check_storage_locks: it names the holder now.
            self.check_storage_locks()
            refuse(str(e))
        except OSError as e:
            refuse(f"cannot open the storage: {os_error_text(e)}")
        except replication.ReplicationError as e:
            refuse(str(e))

    def keep_blob_directories_private(self):
        """ZODB recreates the blob directory of a new FileStorage with the
        umask's mode; bin/buildout made it 0700, as ZODB advises."""
        for _, _, blob_dir in replication.file_storages(self.options.storages):
            if blob_dir:
                with contextlib.suppress(OSError):  # not ours to change
                    os.chmod(blob_dir, 0o700)

    def create_server(self):
        # ZEO's server, but naming a client too old to serve, and with
        # TLS handshakes that log a refused client.
        self.server = acceptor.create_server(self.storages, self.options)
        for name, storage in self.storages.items():
            # A ZRS secondary's state (zrscompat), for bin/<part> stats.
            state = getattr(storage, "replication_state", None)
            if state is not None:
                self.server.stats[name].replication = state
        for listener, reply in self.listeners:
            listener.start(functools.partial(reply, self.server))

    def close_server(self):
        self.close_listeners()
        super().close_server()

    def close_listeners(self):
        for listener, _ in self.listeners:
            listener.close()
        self.listeners = []


def main(zeo_conf, buildout_dir, args=None, monitor_address=None,
         metrics_address=None):
    """Run the server configured by ZEO_CONF until it is stopped.

    MONITOR_ADDRESS and METRICS_ADDRESS are (host, port) or a unix
    socket path, or None."""
    os.environ[BUILDOUT_ENV] = buildout_dir
    if args is None:
        args = sys.argv[1:]
    options = ZEO.runzeo.ZEOOptions()
    try:
        options.realize(["-C", zeo_conf] + list(args))
    except OSError as e:  # e.g. a log file it may not write
        refuse(os_error_text(e))
    if "zc.zrs.secondary" in sys.modules:
        # A zeo-conf of the user's own that imports zc.zrs's <zrs>.
        from plone.recipe.zope2zeoserver import zrscompat
        zrscompat.patch()
    Server(options, monitor_address, metrics_address).main()


def refuse(message):
    """Stop the server before it serves anything, with MESSAGE as the one
    line the control script quotes."""
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIGURATION)


def locked_message(path):
    return (f"{path} is in use by {lock_holder(path + '.lock')}; one "
            "Data.fs can have only one server: stop that one, or give this "
            "one its own file-storage")
