"""bin/<part>: start, stop and inspect the part's ZEO server.

zdaemon's zdctl does the work (a zdrun process manager keeps the server
running); this adds what an operator needs from it: start returns once the
server accepts connections or fails with the reason, status follows LSB
exit codes, fg is the server itself, waits poll finely and are bounded.
"""

import os
import pwd
import socket
import sys
import time

import zdaemon.zdctl
import zdaemon.zdoptions

import ZEO

from plone.recipe.zope2zeoserver.zeoconf import BUILDOUT_ENV


POLL = 0.05  # seconds between status polls (zdctl sleeps a whole second)
STATUS_NOT_RUNNING = 3  # LSB: program is not running
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

    @property
    def address(self):
        return self.options.configroot.zeo.address.address

    def address_text(self):
        address = self.address
        if isinstance(address, str):
            return address
        host, port = address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def accepts_connections(self):
        return can_connect(self.address)

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
            print(f"address {self.address_text()} already in use by another "
                  "process; stop that process or change zeo-address",
                  file=sys.stderr)
            return 1
        deadline = time.monotonic() + self.options.start_timeout
        if super().do_start(arg):
            return self.explain_failure("the server did not start")
        return self.wait_until_ready(deadline)

    def wait_until_ready(self, deadline):
        """After zdrun reports a pid: wait for the address to accept."""
        while not self.accepts_connections():
            self.get_status()
            if not self.zd_up:
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

    def do_stop(self, arg):
        self.get_status()
        if not self.zd_up:
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
        super().do_status(arg)
        return 0 if self.zd_pid else STATUS_NOT_RUNNING

    def do_foreground(self, arg):
        """Become the server: its exit status is ours and signals reach it
        directly, so Ctrl-C or a process manager's SIGTERM stop it cleanly."""
        self.get_status()
        if self.zd_pid:
            print(f"the server is already running (pid={self.zd_pid}); "
                  "stop it first", file=sys.stderr)
            return 1
        return run_program(self.options.program + self.options.args[1:])

    def do_fg(self, arg):
        return self.do_foreground(arg)

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


def can_connect(address):
    """True if something accepts connections on ADDRESS (zeo.conf form)."""
    if isinstance(address, str):
        family = socket.AF_UNIX
    else:
        host, port = address
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(
            host, host)
        address = (host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(address)
        except OSError:
            return False
    return True


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


def main(zeo_conf, buildout_dir, args=None):
    """Entry point of bin/<part>; ZEO_CONF and BUILDOUT_DIR are baked in."""
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
    if not options.args:
        if sys.stdin.isatty():
            commands.cmdloop()
            return 0
        fail("usage: %s COMMAND; commands: %s" % (
            os.path.basename(sys.argv[0]),
            ", ".join(commands.command_names())))
    return commands.onecmd(" ".join(options.args)) or 0
