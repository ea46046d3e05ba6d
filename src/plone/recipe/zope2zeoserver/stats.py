"""bin/<part> stats and check: ask the running server for its figures
and judge them.

The control script (`ctl`) parses the command and prints; this module
asks the server over its own address, with ZEO's `ruok` handshake, and
turns the answer into what `stats` and `check` print.  The control
script imports it only for those two commands: start, stop and status
need none of it.
"""

import json
import os
import socket
import struct
import sys
import time

from plone.recipe.zope2zeoserver import figures
from plone.recipe.zope2zeoserver import replication
from plone.recipe.zope2zeoserver import tlsclient
from plone.recipe.zope2zeoserver.addresses import client_address
from plone.recipe.zope2zeoserver.addresses import describe
from plone.recipe.zope2zeoserver.arguments import ArgumentParser
from plone.recipe.zope2zeoserver.arguments import non_negative
from plone.recipe.zope2zeoserver.processes import STATUS_NOT_RUNNING


ASK_TIMEOUT = 5  # seconds stats and check wait for each step of an answer
# Monitoring-plugin exit statuses (Nagios, Icinga, Sensu, ...).
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
CHECK_STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


class NoAnswer(Exception):
    """The server gave no statistics; DOWN: nothing listens at all."""

    def __init__(self, message, down=False):
        super().__init__(message)
        self.down = down


def server_statuses(address, timeout=ASK_TIMEOUT, tls=None):
    """{storage name: server_status dict} of the server at ADDRESS.

    Asked with ZEO's `ruok` handshake, as zeo-nagios does: one round trip
    for all storages, and the asking connection is never registered, so
    it is not counted among the clients it reports.  TLS: the client
    certificate to present (see `tlsclient`).
    """
    family, target = client_address(address)
    where = describe(address)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(target)
            if tls is not None:
                conn, _ = tlsclient.connect(s, where, tls)
                with conn:
                    conn.sendall(struct.pack(">I", 4) + b"ruok")
                    return json.loads(receive_message(conn))
            s.sendall(struct.pack(">I", 4) + b"ruok")
            receive_message(s)  # the server's protocol version
            return json.loads(receive_message(s))
    except (ConnectionRefusedError, FileNotFoundError) as e:
        raise NoAnswer(f"the ZEO server at {where} is not running "
                       f"({e.strerror}); start it with the start command",
                       down=True)
    except TimeoutError:
        raise NoAnswer(f"the ZEO server at {where} did not answer within "
                       f"{timeout:g} s")
    except OSError as e:
        raise NoAnswer(f"cannot ask the ZEO server at {where}: "
                       f"{e.strerror or e}")
    except (EOFError, ValueError):
        raise NoAnswer(f"the server at {where} did not answer like a ZEO "
                       "server; is zeo-address right?")
    except tlsclient.TLSError as e:
        raise NoAnswer(str(e))


def receive_message(sock, limit=1 << 24):
    """One message of ZEO's protocol: 4 bytes of length, then data."""
    size, = struct.unpack(">I", receive_exactly(sock, 4))
    if size > limit:
        raise ValueError(f"a message of {size} bytes")
    return receive_exactly(sock, size)


def receive_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def json_text(where, statuses, roles, now=None):
    """`stats --json`: the figures of each storage of the server at WHERE
    (`storage_figures`); ROLES: {storage name: role} from zeo.conf."""
    now = time.time() if now is None else now
    return json.dumps({
        "address": where,
        "time": now,
        "storages": {name: storage_figures(status, now, roles.get(name))
                     for name, status in statuses.items()},
    }, indent=2, sort_keys=True)


def storage_figures(status, now, role=None):
    """`stats --json` of one storage: the monitor's figures; for a
    storage that is replicated or fans out (ROLE), its role and the
    replication state the server reports (a primary's or a secondary's,
    or null)."""
    values = figures.figures(status, now)
    if role:
        values["role"] = role
        values["replication"] = status.get("replication")
    return values


def plain_text(where, statuses, roles):
    """`stats` for people: the server, the role of each replicated
    storage with its replication state, then the monitor blocks."""
    lines = [f"ZEO server at {where}\n"]
    for name, role in roles.items():
        lines.append(f"storage {name}: " + replication.role_text(
            role, statuses.get(name, {}).get("replication")) + "\n")
    lines.append("\n")
    return "".join(lines) + figures.stats_text(statuses)


def health(statuses, lock_warning, lock_critical=None, now=None):
    """(exit status, summary, perfdata) of a monitoring check: a commit
    lock held too long means commits are stuck behind one client."""
    now = time.time() if now is None else now
    values = {name: figures.figures(statuses[name], now)
              for name in sorted(statuses)}
    if not values:
        return WARNING, "the server serves no storage", []
    level, problems, perfdata = OK, [], []
    for name, v in values.items():
        held = v["commit_lock_seconds"]
        for state, limit in ((CRITICAL, lock_critical),
                             (WARNING, lock_warning)):
            if held and limit is not None and held >= limit:
                level = max(level, state)
                problems.append(f"commit lock of storage {name!r} held "
                                f"for {held:.0f} s")
                break
        prefix = "" if name == "1" else f"{name}:"
        perfdata += [f"{prefix}{key}={v[figure]}" for key, figure in (
            ("clients", "clients"), ("active", "active_transactions"),
            ("waiting", "waiting_transactions"), ("commits", "commits"),
            ("aborts", "aborts"), ("loads", "loads"), ("stores", "stores"),
            ("conflicts", "conflicts"),
            ("conflicts_resolved", "conflicts_resolved"))]
        perfdata.append(f"{prefix}lock={v['commit_lock_seconds']:g}s;"
                        f"{lock_warning:g};"
                        + ("" if lock_critical is None
                           else f"{lock_critical:g}"))
        replicating = statuses[name].get("replication")
        if replicating and replicating.get("connected") is False:
            # A ZRS secondary that does not receive the primary's commits.
            level = max(level, WARNING)
            problems.append(
                f"storage {name!r} is a secondary not connected to its "
                f"primary {replicating['primary']} for "
                f"{max(0, now - replicating['since']):.0f} s")
    clients = sum(v["clients"] for v in values.values())
    commits = sum(v["commits"] for v in values.values())
    summary = f"{clients} clients, {commits} commits"
    if len(values) > 1:
        summary = f"{len(values)} storages, {summary}"
    return level, "; ".join(problems + [summary]), perfdata


def report(level, summary, perfdata=()):
    """Print the one line monitoring plugins print; return LEVEL."""
    line = f"ZEO {CHECK_STATES[level]} - {summary}"
    if perfdata:
        line += " | " + " ".join(perfdata)
    print(line)
    return level


def stats_parser():
    parser = ArgumentParser(
        prog=f"{os.path.basename(sys.argv[0])} stats",
        description="Print the running server's statistics per storage "
                    "(the figures of 1.x's monitor server). Exit status 3 "
                    "when the server is not running.")
    parser.add_argument("--json", action="store_true",
                        help="print them as JSON")
    add_timeout(parser)
    return parser


def check_parser():
    parser = ArgumentParser(
        prog=f"{os.path.basename(sys.argv[0])} check",
        description="Check the running server like a monitoring plugin "
                    "(Nagios, Icinga, a container health check): print one "
                    "line; exit 0 OK, 1 WARNING, 2 CRITICAL (not running or "
                    "not answering), 3 UNKNOWN.")
    parser.add_argument(
        "--lock-warning", type=non_negative, default=10, metavar="SECONDS",
        help="WARNING when a commit lock is held this long "
             "(default: %(default)s)")
    parser.add_argument(
        "--lock-critical", type=non_negative, default=None,
        metavar="SECONDS",
        help="CRITICAL when a commit lock is held this long (default: never)")
    add_timeout(parser)
    return parser


def add_timeout(parser):
    parser.add_argument(
        "--timeout", type=non_negative, default=ASK_TIMEOUT,
        metavar="SECONDS",
        help="give up when the server does not answer within this many "
             "seconds (default: %(default)s)")


def stats_command(address, arg, tls=None, roles=None):
    """`stats ARG` of the server at ADDRESS; ROLES: {storage name: role}
    of its replicated storages (`replication.role`)."""
    from plone.recipe.zope2zeoserver.arguments import parse_command
    options, status = parse_command(stats_parser(), arg)
    if options is None:
        return status
    roles = roles or {}
    try:
        statuses = server_statuses(address, options.timeout, tls)
    except NoAnswer as e:
        print(e, file=sys.stderr)
        return STATUS_NOT_RUNNING if e.down else 1
    if options.json:
        print(json_text(describe(address), statuses, roles))
    else:
        print(plain_text(describe(address), statuses, roles), end="")
    return 0


def check_command(address, arg, tls=None):
    """`check ARG` of the server at ADDRESS: one line for a monitoring
    system, and its exit status."""
    from plone.recipe.zope2zeoserver.arguments import parse_command
    options, status = parse_command(check_parser(), arg)
    if options is None:
        return UNKNOWN if status else OK
    try:
        statuses = server_statuses(address, options.timeout, tls)
    except NoAnswer as e:
        return report(CRITICAL, str(e))
    try:
        return report(*health(statuses, options.lock_warning,
                              options.lock_critical))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return report(UNKNOWN, "unexpected statistics from the server at "
                      f"{describe(address)}: {e!r}")
