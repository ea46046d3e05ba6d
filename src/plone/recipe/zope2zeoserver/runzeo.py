"""parts/<part>/bin/runzeo: the ZEO server process.

ZEO's runzeo with the part's zeo.conf baked in, plus the monitor and
metrics listeners ZEO 6 lacks (ZEO 6's zeo.conf has no place for their
addresses, so they are baked in as arguments too).  zdaemon runs this
program; `bin/<part> fg`, systemd or supervisord may run it directly.
"""

import functools
import os
import sys

import ZEO.runzeo

from plone.recipe.zope2zeoserver import monitor
from plone.recipe.zope2zeoserver import tlsserver
from plone.recipe.zope2zeoserver.zeoconf import BUILDOUT_ENV

# Exit status for a configuration problem: zdaemon does not restart a
# server that exits with it (exit-codes in zeo.conf's <runner>).
EXIT_CONFIGURATION = 2


class Server(ZEO.runzeo.ZEOServer):
    """ZEO's server, answering statistics on its listeners' addresses."""

    def __init__(self, options, monitor_address=None, metrics_address=None):
        super().__init__(options)
        self.wanted = [
            ("monitor-address", monitor_address, monitor.monitor_reply),
            ("metrics-address", metrics_address, monitor.metrics_reply)]
        self.listeners = []  # (Listener, its reply coroutine)

    def check_socket(self):
        """Claim the listeners' addresses before the storages open: one
        in use stops the start at once, naming its option."""
        super().check_socket()
        for option, address, reply in self.wanted:
            if address is None:
                continue
            try:
                listener = monitor.Listener(address, option)
            except monitor.ListenError as e:
                self.close_listeners()
                print(f"Error: {e}", file=sys.stderr)
                sys.exit(EXIT_CONFIGURATION)
            self.listeners.append((listener, reply))

    def create_server(self):
        # ZEO's server, but with handshakes that log a refused TLS client.
        self.server = tlsserver.create_server(self.storages, self.options)
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
    options.realize(["-C", zeo_conf] + list(args))
    Server(options, monitor_address, metrics_address).main()
