"""bin/<part>: the control script's entry point.

`status` is answered from the resolved configuration (resolved.py) at
about the cost of starting Python, and `check` from its address; every
other command, and these two when that file is missing or stale, goes to
ctl.py (zdaemon's commands on zeo.conf).
"""

import os
import sys

from plone.recipe.zope2zeoserver import processes
from plone.recipe.zope2zeoserver import resolved
from plone.recipe.zope2zeoserver.addresses import can_connect


def main(zeo_conf, buildout_dir, args=None, tls=None):
    """Entry point of bin/<part>, with ctl.main's arguments."""
    if args is None:
        args = sys.argv[1:]
    if (args[:1] in (["status"], ["check"]) and os.name != "nt"
            and not os.environ.get("DAEMON_MANAGER_MODE")):
        conf = resolved.read(resolved.path_beside(zeo_conf), buildout_dir)
        try:
            if args[0] == "check":
                address = server_address(conf)  # before importing stats
                from plone.recipe.zope2zeoserver import stats
                return stats.check_command(address, " ".join(args[1:]), tls)
            return quick_status(conf, " ".join(args[1:]))
        except (TypeError, KeyError, ValueError):
            pass  # none, or not what this version writes: ask ctl
    from plone.recipe.zope2zeoserver import ctl
    return ctl.main(zeo_conf, buildout_dir, args, tls)


def server_address(conf):
    """The server's address in CONF (`resolved.read`), as zeo.conf's."""
    address = conf["address"][0]
    if address.startswith("/"):
        return address
    host, port = address.rsplit(" ", 1)
    return host, int(port)


def quick_status(conf, arg):
    """`processes.status` from CONF (`resolved.read`)."""
    address = server_address(conf)
    return processes.status(
        arg, conf.get("role", []), conf["socket-name"][0],
        conf["pid-file"][0], conf["program"][0],
        lambda: can_connect(address))
