"""bin/<part>: the control script's entry point.

`status`, `stats`, `check` and the `stop` of a server zdaemon runs are
answered from the resolved configuration (resolved.py), `status` at
about the cost of starting Python; every other command goes to ctl.py
(zdaemon's commands on zeo.conf), as do these where resolved.conf cannot
be used.
"""

import os
import sys

from plone.recipe.zope2zeoserver import processes
from plone.recipe.zope2zeoserver import resolved
from plone.recipe.zope2zeoserver.addresses import can_connect

QUICK_COMMANDS = ("status", "stats", "check", "stop")


def main(zeo_conf, buildout_dir, args=None):
    """Entry point of bin/<part>; ZEO_CONF and BUILDOUT_DIR are baked in."""
    if args is None:
        args = sys.argv[1:]
    command, arg = (args[0] if args else ""), " ".join(args[1:])
    if (command in QUICK_COMMANDS and os.name != "nt"
            and not os.environ.get("DAEMON_MANAGER_MODE")):
        try:
            conf = resolved.load(zeo_conf, buildout_dir)
        except resolved.Unusable:
            pass  # ctl reads zeo.conf
        else:
            if conf.changed:
                print(f"{os.path.basename(sys.argv[0])}: "
                      f"{conf.changed_note()}", file=sys.stderr)
            if command == "status":
                return quick_status(conf, arg)
            if command == "stop":
                socket = conf.one("socket-name")
                if processes.manager_pid(processes.ask_manager(socket))[1]:
                    return processes.stop(socket, conf.stop_limit)
                # Nothing runs under zdaemon: ctl says what runs instead.
                return ctl_main(zeo_conf, buildout_dir, args, conf)
            from plone.recipe.zope2zeoserver import stats
            if command == "check":
                return stats.check_command(conf.address, arg, conf.tls)
            return stats.stats_command(conf.address, arg, conf.tls,
                                       conf.roles)
    return ctl_main(zeo_conf, buildout_dir, args)


def ctl_main(zeo_conf, buildout_dir, args, conf=None):
    """ctl.main, with the client certificate for stats and check from
    CONF, resolved.conf as loaded already, or as read now."""
    from plone.recipe.zope2zeoserver import ctl
    if conf is None:
        # The certificate comes from the options: never stale.
        found, _ = resolved.read(resolved.path_beside(zeo_conf), buildout_dir)
        conf = resolved.Resolved(found)
    return ctl.main(zeo_conf, buildout_dir, args, conf.tls)


def quick_status(conf, arg):
    """`processes.status` from CONF (a `resolved.Resolved`)."""
    from plone.recipe.zope2zeoserver.replication import role_lines
    address = conf.address
    return processes.status(
        arg, role_lines(conf.roles), conf.one("socket-name"),
        conf.one("pid-file"), conf.one("program"),
        lambda: can_connect(address))
