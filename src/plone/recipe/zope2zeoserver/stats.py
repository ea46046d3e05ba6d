"""bin/<part> stats and check: ask the running server for its figures
and judge them.

The control script (`ctl`) parses the command and prints; this module
asks the server over its own address, with ZEO's `ruok` handshake, and
turns the answer into what `stats` and `check` print; `stats --watch`
asks again and again and shows the figures per second on a terminal.
The control script imports it only for those two commands: start, stop
and status need none of it.
"""

import argparse
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
WATCH_INTERVAL = 2  # seconds between the screens of stats --watch
WATCH_MINIMUM = 0.1  # seconds: one answer and one screen each time
# The counters stats --watch shows per second.
RATE_COUNTERS = ("commits", "loads", "stores")
# Terminal control (ANSI/VT100): cursor home, erase to the end of the
# line, erase below, erase all, hide and show the cursor.
HOME, ERASE_LINE, ERASE_BELOW, CLEAR = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


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


def rates(before, after, seconds):
    """{storage name: {counter: per second}} of RATE_COUNTERS between two
    answers of the server (`server_statuses`) SECONDS apart.  None where
    there is nothing to compare: a storage that is new in AFTER, or a
    server that restarted in between (its counters start again)."""
    found = {}
    for name, status in after.items():
        old = before.get(name)
        restarted = old is None or old.get("start") != status.get("start")
        found[name] = {
            key: None if restarted or seconds <= 0
            or status[key] < old[key]
            else (status[key] - old[key]) / seconds
            for key in RATE_COUNTERS}
    return found


def watch_lines(where, statuses, per_second, roles, interval, now=None):
    """The screen of `stats --watch`, as lines: the server, the time, the
    role of each replicated storage, then one row per storage with its
    counters per second (PER_SECOND, `rates`) and its state now."""
    now = time.time() if now is None else now
    lines = [f"ZEO server at {where} - "
             f"{time.strftime('%H:%M:%S', time.localtime(now))}, every "
             f"{interval:g} s (Ctrl-C ends)"]
    for name, role in roles.items():
        lines.append(f"storage {name}: " + replication.role_text(
            role, statuses.get(name, {}).get("replication"), now))
    rows = [("storage", "commits/s", "loads/s", "stores/s", "clients",
             "waiting", "lock", "last txn")]
    for name in sorted(statuses):
        values = figures.figures(statuses[name], now)
        rows.append((
            name,
            *("-" if per_second[name][key] is None
              else f"{per_second[name][key]:.1f}" for key in RATE_COUNTERS),
            str(values["clients"]), str(values["waiting_transactions"]),
            f"{values['commit_lock_seconds']:.1f} s"
            if values["commit_lock_seconds"] else "free",
            "none" if values["seconds_since_last_transaction"] is None
            else duration_text(values["seconds_since_last_transaction"])
            + " ago"))
    widths = [max(len(row[column]) for row in rows)
              for column in range(len(rows[0]))]
    lines.append("")
    for row in rows:
        lines.append("  ".join(
            [row[0].ljust(widths[0])]
            + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        ).rstrip())
    return lines


def duration_text(seconds):
    """'4 s', '12 min', '3 h', '5 d': how long ago, at a glance."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size:.0f} {unit}"
    return f"{seconds:.0f} s"


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
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true",
                       help="print them as JSON")
    shown.add_argument(
        "--watch", type=watch_interval, nargs="?", const=WATCH_INTERVAL,
        metavar="SECONDS",
        help="on a terminal, show them again every SECONDS (default: "
             f"{WATCH_INTERVAL}), with commits, loads and stores per "
             "second, until Ctrl-C")
    add_timeout(parser)
    return parser


def watch_interval(text):
    value = non_negative(text)
    if value < WATCH_MINIMUM:
        raise argparse.ArgumentTypeError(
            f"{text!r} is less than {WATCH_MINIMUM:g} seconds")
    return value


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
    if options.watch is not None and not sys.stdout.isatty():
        print(f"{stats_parser().prog}: error: --watch redraws a terminal "
              "and the output is not one; for figures over time, run "
              "'stats --json' in a loop or scrape metrics-address",
              file=sys.stderr)
        return 2
    if options.watch is not None:
        return watch(address, options, tls, roles)
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


def watch(address, options, tls, roles):
    """`stats --watch`: redraw the figures of the server at ADDRESS in
    place, like top, every OPTIONS.watch seconds; 0 on Ctrl-C, 1 once
    the server no longer answers (3 if it never did, as `stats`)."""
    import shutil  # for --watch only
    import signal
    # Ended by kill or a closed terminal as by Ctrl-C: the cursor shown.
    for ending in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(ending, signal.default_int_handler)
    out = sys.stdout
    drawing = False
    try:
        try:
            statuses = server_statuses(address, options.timeout, tls)
        except NoAnswer as e:
            print(e, file=sys.stderr)
            return STATUS_NOT_RUNNING if e.down else 1
        before, asked = statuses, time.monotonic()
        per_second = rates({}, statuses, 0)
        drawing = True
        out.write(HIDE_CURSOR + CLEAR)  # each screen starts at HOME
        while True:
            # Cut to the terminal: a line that wrapped, or one too many,
            # would scroll the screen instead of redrawing it.
            columns, rows = shutil.get_terminal_size()
            lines = watch_lines(describe(address), statuses, per_second,
                                roles, options.watch)[:max(1, rows - 1)]
            out.write(HOME + "".join(line[:columns - 1] + ERASE_LINE + "\n"
                                     for line in lines) + ERASE_BELOW)
            out.flush()
            time.sleep(max(0.0, options.watch - (time.monotonic() - asked)))
            try:
                statuses = server_statuses(address, options.timeout, tls)
            except NoAnswer:
                # Once more: a server that is stopping may drop the
                # connection before it refuses one, which says more.
                time.sleep(min(options.watch, 0.5))
                try:
                    statuses = server_statuses(address, options.timeout, tls)
                except NoAnswer as e:
                    out.write(SHOW_CURSOR)
                    out.flush()
                    print(f"stopped watching: {e}", file=sys.stderr)
                    return 1
            now = time.monotonic()
            per_second = rates(before, statuses, now - asked)
            before, asked = statuses, now
    except KeyboardInterrupt:
        return 0
    finally:
        if drawing:
            out.write(SHOW_CURSOR)
            out.flush()


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
