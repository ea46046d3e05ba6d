"""bin/<part>: start, stop and inspect the part's ZEO server.

zdaemon's zdctl does the work (a zdrun process manager keeps the server
running); this adds what an operator needs from it: start returns once the
server accepts connections or fails with the reason, status follows LSB
exit codes, fg is the server itself, waits poll finely and are bounded.
"""

import argparse
import json
import os
import pwd
import shlex
import socket
import struct
import sys
import time

import zdaemon.zdctl
import zdaemon.zdoptions

import ZEO

from plone.recipe.zope2zeoserver import monitor
from plone.recipe.zope2zeoserver import tlsclient
from plone.recipe.zope2zeoserver.pack import non_negative
from plone.recipe.zope2zeoserver.zeoconf import BUILDOUT_ENV


POLL = 0.05  # seconds between status polls (zdctl sleeps a whole second)
STATUS_NOT_RUNNING = 3  # LSB: program is not running
ASK_TIMEOUT = 5  # seconds stats and check wait for each step of an answer
# Monitoring-plugin exit statuses (Nagios, Icinga, Sensu, ...).
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
CHECK_STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
FOREGROUND_COMMANDS = ("", "start", "fg", "foreground")


class Options(zdaemon.zdctl.ZDCtlOptions):
    """zdctl's options, reading zeo.conf with ZEO's schema."""

    def __init__(self):
        super().__init__()
        self.schemadir = os.path.dirname(ZEO.__file__)
        self.schemafile = "zeoctl.xml"

    def realize(self, *args, **kw):
        # zdctl insists on an action; we answer "no action" ourselves.
        self.positional_args_allowed = True
        zdaemon.zdoptions.RunnerOptions.realize(self, *args, **kw)
        if not self.python:
            self.python = sys.executable


class Commands(zdaemon.zdctl.ZDCmd):
    """zdctl's commands with readiness, clear failures and exit codes."""

    # The client certificate stats and check present when the server
    # requires TLS: {"certificate", "key", "server_certificate"} paths.
    tls = None

    def __init__(self, options):
        self.prepare_for_user(options)
        super().__init__(options)

    # -- helpers ---------------------------------------------------------

    def prepare_for_user(self, options):
        """Started by root with effective-user: the directories the server
        writes must belong to that user before zdctl drops privileges."""
        if options.user is None or os.geteuid() != 0:
            return
        try:
            entry = (pwd.getpwuid(int(options.user)) if options.user.isdigit()
                     else pwd.getpwnam(options.user))
        except KeyError:
            fail(f"effective-user {options.user!r} does not exist on this "
                 "machine; create it or change effective-user and rerun "
                 "bin/buildout")
        for path in server_paths(options.configroot):
            chown_path(path, entry.pw_uid, entry.pw_gid)
        check_runs_as(entry)


    @property
    def address(self):
        return self.options.configroot.zeo.address.address

    def address_text(self):
        return monitor.describe(self.address)

    def accepts_connections(self):
        return can_connect(self.address)

    def address_in_use(self):
        print(f"address {self.address_text()} already in use by another "
              "process; stop that process or change zeo-address",
              file=sys.stderr)
        return 1

    def explain_failure(self, what):
        print(f"{what}; see {self.options.logfile} and "
              f"{self.options.transcript}", file=sys.stderr)
        for path in (self.options.transcript, self.options.logfile):
            lines = tail(path, 10)
            if lines:
                print(f"--- last lines of {path}:", file=sys.stderr)
                sys.stderr.writelines(lines)
        return 1

    def awhile(self, cond, msg):
        """Wait until COND(seconds waited) holds, polling every POLL s.

        Returns 1 when the daemon manager disappears before the condition
        holds, or no condition held within the longer of the start and
        stop timeouts.
        """
        runner = self.options.configroot.runner
        limit = max(runner.start_timeout, runner.stop_timeout) + 5
        started = time.monotonic()
        was_running = bool(self.get_status())
        while True:
            waited = time.monotonic() - started
            if cond(waited):
                print(msg % self.__dict__)
                return 0
            if not self.zd_up and (was_running or waited > 10):
                return 1
            if waited > limit:
                print(f"gave up waiting after {limit} s", file=sys.stderr)
                return 1
            time.sleep(POLL)
            was_running = bool(self.get_status()) or was_running

    def _start_cond(self, waited):
        return self.zd_pid and not self.zd_testing

    # -- commands --------------------------------------------------------

    def do_start(self, arg):
        self.get_status()
        if self.zd_pid:
            print(f"already running; pid={self.zd_pid}")
            return 0
        if not self.zd_up and self.accepts_connections():
            return self.address_in_use()
        deadline = time.monotonic() + self.options.start_timeout
        if super().do_start(arg):
            self.stop_manager()
            return self.explain_failure("the server did not start")
        return self.wait_until_ready(deadline)

    def wait_until_ready(self, deadline):
        """After zdrun reports a pid: wait for the address to accept.

        A server that exits meanwhile crashed while starting: zdrun is
        told to stop instead of respawning it after start has failed."""
        first_pid = self.zd_pid
        while not self.accepts_connections():
            self.get_status()
            if not self.zd_up or self.zd_pid != first_pid:
                self.stop_manager()
                return self.explain_failure("the server exited while starting")
            if time.monotonic() > deadline:
                return self.explain_failure(
                    f"the server does not accept connections on "
                    f"{self.address_text()} after {self.options.start_timeout}"
                    " s (start-timeout); it may still be opening a large "
                    "database")
            time.sleep(POLL)
        print(f"ready: serving on {self.address_text()}, pid={self.zd_pid}")
        return 0

    def help_start(self):
        print("start -- start the server and wait until it accepts "
              "connections")

    def stop_manager(self):
        """Make zdrun stop the server and exit; wait (bounded) for it."""
        self.send_action("stop")
        deadline = (time.monotonic() + 5 +
                    self.options.configroot.runner.stop_timeout)
        while self.get_status() and time.monotonic() < deadline:
            time.sleep(POLL)

    def do_logtail(self, arg):
        """zdctl's logtail cannot follow a file on Python 3 (it seeks from
        the end of a text-mode file and stops at the first new line)."""
        path = arg.strip() or self.options.logfile
        if not path:
            print("no log file configured; use: logtail LOGFILE",
                  file=sys.stderr)
            return 1
        try:
            follow(path)
        except KeyboardInterrupt:
            print()
        except OSError as e:
            print(f"cannot read {path}: {e.strerror or e}", file=sys.stderr)
            return 1
        return 0

    def do_stop(self, arg):
        self.get_status()
        if not self.zd_up:
            pid = self.foreground_pid()
            if pid:
                print(f"the server (pid={pid}) runs in the foreground, not "
                      "under zdaemon: stop it with the process manager that "
                      "started it", file=sys.stderr)
                return 1
            print("not running")
            return 0
        return super().do_stop(arg)

    def do_restart(self, arg):
        self.get_status()
        if not self.zd_pid:
            return self.do_start(arg)
        deadline = time.monotonic() + self.options.start_timeout
        old = self.zd_pid
        self.send_action("restart")
        if self.awhile(lambda waited: self.zd_pid not in (0, old),
                       "restarted, pid=%(zd_pid)d"):
            return self.explain_failure("the server did not restart")
        return self.wait_until_ready(deadline)

    def do_status(self, arg=""):
        self.get_status()
        pid = None if self.zd_up else self.foreground_pid()
        if pid:
            print(f"program running in the foreground, not under zdaemon; "
                  f"pid={pid}")
            return 0
        super().do_status(arg)
        return 0 if self.zd_pid else STATUS_NOT_RUNNING

    def foreground_pid(self):
        """The pid of a server started with fg (by supervisord, systemd or
        by hand): its pid file names a live process and its address
        accepts connections."""
        try:
            with open(self.options.configroot.zeo.pid_filename) as f:
                pid = int(f.read())
            os.kill(pid, 0)
        except (OSError, ValueError, TypeError):
            return None
        return pid if self.accepts_connections() else None

    def do_foreground(self, arg):
        """Become the server: its exit status is ours and signals reach it
        directly, so Ctrl-C or a process manager's SIGTERM stop it cleanly."""
        self.get_status()
        if self.zd_pid:
            print(f"the server is already running (pid={self.zd_pid}); "
                  "stop it first", file=sys.stderr)
            return 1
        if self.accepts_connections():
            return self.address_in_use()
        return run_program(self.options.program + self.options.args[1:])

    def do_fg(self, arg):
        return self.do_foreground(arg)

    # -- statistics ------------------------------------------------------

    def do_stats(self, arg):
        options, status = parse_command(stats_parser(), arg)
        if options is None:
            return status
        try:
            statuses = server_statuses(self.address, options.timeout,
                                       self.tls)
        except NoAnswer as e:
            print(e, file=sys.stderr)
            return STATUS_NOT_RUNNING if e.down else 1
        if options.json:
            now = time.time()
            print(json.dumps({
                "address": self.address_text(),
                "time": now,
                "storages": {name: monitor.figures(status, now)
                             for name, status in statuses.items()},
            }, indent=2, sort_keys=True))
        else:
            print(f"ZEO server at {self.address_text()}\n")
            print(monitor.stats_text(statuses), end="")
        return 0

    def help_stats(self):
        stats_parser().print_help()

    def do_check(self, arg):
        options, status = parse_command(check_parser(), arg)
        if options is None:
            return UNKNOWN if status else OK
        try:
            statuses = server_statuses(self.address, options.timeout,
                                       self.tls)
        except NoAnswer as e:
            return report(CRITICAL, str(e))
        try:
            return report(*health(statuses, options.lock_warning,
                                  options.lock_critical))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            return report(UNKNOWN, "unexpected statistics from the server "
                          f"at {self.address_text()}: {e!r}")

    def help_check(self):
        check_parser().print_help()

    def default(self, line):
        print(f"unknown command {line.split()[0]!r}; commands: "
              f"{', '.join(self.command_names())}", file=sys.stderr)
        return 2

    def command_names(self):
        return sorted(name[3:] for name in dir(self)
                      if name.startswith("do_") and name != "do_EOF")

    def do_EOF(self, arg):
        print()
        return True


def run_program(program):
    sys.stdout.flush()
    if os.name == "nt":
        import subprocess
        return subprocess.call(program)
    os.execv(program[0], program)


def check_runs_as(entry):
    """Fail now if the server could not even start as that user (a Python
    or eggs under a private home directory), instead of a silent crash
    loop under zdaemon."""
    import subprocess
    try:
        result = subprocess.run(
            [sys.executable, "-c", "import ZEO.runzeo"], user=entry.pw_uid,
            group=entry.pw_gid, extra_groups=[], capture_output=True,
            text=True, env=dict(os.environ,
                                PYTHONPATH=os.pathsep.join(sys.path)))
    except OSError as e:
        reason = e.strerror
    else:
        if not result.returncode:
            return
        lines = result.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"exit status {result.returncode}"
    fail(f"effective-user {entry.pw_name!r} cannot run the server: {reason}; "
         f"make {sys.executable} and the eggs readable by that user")


def client_address(address):
    """(family, address) that reaches a server listening on ADDRESS
    (zeo.conf form): a wildcard host means this machine."""
    if isinstance(address, str):
        return socket.AF_UNIX, address
    host, port = address
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(
        host, host)
    return socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port)


def can_connect(address):
    """True if something accepts connections on ADDRESS (zeo.conf form)."""
    family, address = client_address(address)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(address)
        except OSError:
            return False
    return True


# -- statistics ----------------------------------------------------------

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
    where = monitor.describe(address)
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


def health(statuses, lock_warning, lock_critical=None, now=None):
    """(exit status, summary, perfdata) of a monitoring check: a commit
    lock held too long means commits are stuck behind one client."""
    now = time.time() if now is None else now
    values = {name: monitor.figures(statuses[name], now)
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
    parser = argparse.ArgumentParser(
        prog=f"{os.path.basename(sys.argv[0])} stats",
        description="Print the running server's statistics per storage "
                    "(the figures of 1.x's monitor server). Exit status 3 "
                    "when the server is not running.")
    parser.add_argument("--json", action="store_true",
                        help="print them as JSON")
    add_timeout(parser)
    return parser


def check_parser():
    parser = argparse.ArgumentParser(
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


def parse_command(parser, arg):
    """(options, None), or (None, exit status) once argparse has printed
    help (0) or a usage error (2)."""
    try:
        return parser.parse_args(shlex.split(arg)), None
    except ValueError as e:  # unbalanced quotes
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return None, 2
    except SystemExit as e:
        return None, e.code


def tail(path, count):
    """The last COUNT lines of PATH, or [] if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            data = f.read().decode("utf-8", "replace")
    except (OSError, TypeError):
        return []
    return [line + "\n" for line in data.splitlines()[-count:]]


def follow(path, count=10, interval=0.2):
    """Print the last COUNT lines of PATH, then whatever is appended to
    it, until interrupted (tail -f)."""
    out = sys.stdout.buffer
    with open(path, "rb") as f:
        sys.stdout.writelines(tail(path, count))
        sys.stdout.flush()
        f.seek(0, os.SEEK_END)
        while True:
            time.sleep(interval)
            if os.fstat(f.fileno()).st_size < f.tell():
                out.write(b"==> file truncated <==\n")
                f.seek(0)
            data = f.read()
            if data:
                out.write(data)
                out.flush()


def server_paths(config):
    """Directories and files the server writes, from the loaded zeo.conf."""
    runner = config.runner
    paths = [runner.socket_name, runner.logfile, runner.transcript,
             config.zeo.pid_filename]
    for storage in config.storages:
        path = getattr(storage.config, "path", None)
        if path:
            paths += [path, path + ".index", path + ".lock", path + ".tmp"]
        blob_dir = getattr(storage.config, "blob_dir", None)
        if blob_dir:
            paths.append(blob_dir)
    dirs = {os.path.dirname(p) for p in paths if p}
    return sorted(dirs) + [p for p in paths if p and os.path.exists(p)]


def chown_path(path, uid, gid):
    """Give PATH (recursively for directories) to uid/gid, if it exists."""
    if not path or not os.path.exists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, gid)
    os.lchown(path, uid, gid)


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def main(zeo_conf, buildout_dir, args=None, tls=None):
    """Entry point of bin/<part>; ZEO_CONF, BUILDOUT_DIR and TLS (the
    client certificate for stats and check) are baked in."""
    os.environ[BUILDOUT_ENV] = buildout_dir
    if args is None:
        args = sys.argv[1:]
    if os.environ.get("DAEMON_MANAGER_MODE"):
        # zdctl re-runs this script as the process manager (zdrun).
        return zdaemon.zdctl.main(args)
    command = args[0] if args else ""
    if os.environ.get("SUPERVISOR_ENABLED") and command in FOREGROUND_COMMANDS:
        # supervisord manages the process itself: never fork.
        args = ["fg"]
    elif os.name == "nt" and command not in ("fg", "foreground", "help"):
        fail("on Windows only 'fg' is available (zdaemon needs POSIX); run "
             "the server as a service with fg, see the README")
    options = Options()
    options.realize(["-C", zeo_conf] + list(args))
    commands = Commands(options)
    commands.tls = tls
    if not options.args:
        if sys.stdin.isatty():
            commands.cmdloop()
            return 0
        fail("usage: %s COMMAND; commands: %s" % (
            os.path.basename(sys.argv[0]),
            ", ".join(commands.command_names())))
    return commands.onecmd(" ".join(options.args)) or 0
