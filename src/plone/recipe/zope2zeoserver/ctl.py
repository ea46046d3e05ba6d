"""bin/<part>: start, stop and inspect the part's ZEO server.

zdaemon's zdctl does the work (a zdrun process manager keeps the server
running); this adds what an operator needs from it: start returns once the
server accepts connections or fails with the reason, status follows LSB
exit codes, fg is the server itself, waits poll finely and are bounded.
"""

import functools
import os
import re
import signal
import socket
import sys
import time

import zdaemon.zdctl
import zdaemon.zdoptions

import ZEO

from plone.recipe.zope2zeoserver import effective_user
from plone.recipe.zope2zeoserver import logs
from plone.recipe.zope2zeoserver import processes
from plone.recipe.zope2zeoserver import python2
from plone.recipe.zope2zeoserver import replication
from plone.recipe.zope2zeoserver.addresses import can_connect
from plone.recipe.zope2zeoserver.addresses import describe
from plone.recipe.zope2zeoserver.processes import MANAGED_ENV
from plone.recipe.zope2zeoserver.processes import manager_command
from plone.recipe.zope2zeoserver.processes import running
from plone.recipe.zope2zeoserver.files import BUILDOUT_ENV
from plone.recipe.zope2zeoserver.files import file_size


POLL = 0.01  # seconds between status polls (zdctl sleeps a whole second)
USAGE = 2  # a command given wrong arguments
# Commands that start the server; under supervisord (SUPERVISOR_ENABLED)
# each runs it in the foreground, as 1.x did.  console: zope2instance's
# verb, which supervisord programs written for 1.x use.
FOREGROUND_COMMANDS = ("", "start", "fg", "foreground", "console")
WINDOWS = os.name == "nt"  # no zdaemon, no exec


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

    def usage(self, msg):
        """One line instead of zdoptions' two."""
        print(f"{os.path.basename(sys.argv[0])}: {msg}; for the commands, "
              "use the help command", file=sys.stderr)
        sys.exit(USAGE)


class Commands(zdaemon.zdctl.ZDCmd):
    """zdctl's commands with readiness, clear failures and exit codes."""

    # Command names may have dashes (convert-py3), do_ methods cannot.
    identchars = zdaemon.zdctl.ZDCmd.identchars + "-"

    # The client certificate stats and check present when the server
    # requires TLS: {"certificate", "key", "server_certificate"} paths.
    tls = None

    def __init__(self, options):
        try:
            effective_user.prepare(options.user, options.configroot)
        except effective_user.CannotRun as e:
            fail(str(e))
        super().__init__(options)

    # -- helpers ---------------------------------------------------------

    def send_action(self, action):
        """zdctl's, but there is no zdaemon manager to ask where there are
        no unix sockets (Windows): it is not running."""
        if not hasattr(socket, "AF_UNIX"):
            return None
        return super().send_action(action)

    @property
    def address(self):
        return self.options.configroot.zeo.address.address

    def address_text(self):
        return describe(self.address)

    def accepts_connections(self):
        return can_connect(self.address)

    def address_in_use(self):
        print(f"address {self.address_text()} already in use by another "
              "process; stop that process or change zeo-address",
              file=sys.stderr)
        return 1

    def log_marks(self):
        """Where the transcript and the log end now: a failure report
        quotes what was written after that (see `explain_failure`)."""
        return {path: file_size(path)
                for path in (self.options.transcript, self.options.logfile)}

    def explain_failure(self, what, marks=None):
        """Report WHAT went wrong, followed on the same line by the reason
        the server printed (its last error line in the transcript), then
        the lines the transcript and the log gained since MARKS (the last
        lines without them)."""
        paths = (self.options.transcript, self.options.logfile)
        news = {path: logs.new_lines(path, (marks or {}).get(path))
                for path in paths}
        reason = logs.failure_reason(news[self.options.transcript])
        print(f"{what}: {reason}" if reason else what, file=sys.stderr)
        print(f"see {self.options.logfile} and {self.options.transcript}",
              file=sys.stderr)
        for path in paths:
            lines = news[path][-10:]
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
        limit = processes.wait_limit(runner.start_timeout, runner.stop_timeout)
        started = time.monotonic()
        was_running = bool(self.get_status())
        while True:
            waited = time.monotonic() - started
            if cond(waited):
                print(msg % self.__dict__)
                return 0
            if not self.zd_up and (was_running or waited > 10
                                   or manager_failed()):
                return 1
            if self.backing_off():
                return 1
            if waited > limit:
                print(f"gave up waiting after {limit} s", file=sys.stderr)
                return 1
            time.sleep(POLL)
            was_running = bool(self.get_status()) or was_running

    def backing_off(self):
        """True if the server exited and zdrun waits before it starts it
        again (it does so only for a server that ran less than
        backoff-limit seconds): the server crashed while starting."""
        match = re.search(r"(?m)^backoff=(\d+)$", self.zd_status or "")
        return bool(self.zd_up and not self.zd_pid and match
                    and int(match.group(1)))

    def _start_cond(self, waited):
        return self.zd_pid and not self.zd_testing

    def parseline(self, line):
        command, arg, line = super().parseline(line)
        return (command and command.replace("-", "_")), arg, line

    @property
    def part(self):
        """The part's name, which is the control script's."""
        return os.path.basename(sys.argv[0])

    def file_storages(self):
        return replication.file_storages(self.options.configroot.storages)

    def refuse_python2_storage(self):
        """1, after saying why, if a storage was written by Python 2: ZODB
        would refuse it, and the reason would be lost in a traceback."""
        refusal = python2.refusal_of(
            (path for _, path, _ in self.file_storages()), self.part)
        if refusal:
            print(refusal, file=sys.stderr)
        return int(bool(refusal))

    # -- commands --------------------------------------------------------

    def do_start(self, arg):
        self.get_status()
        if self.zd_pid:
            print(f"already running; pid={self.zd_pid}")
            return 0
        if self.refuse_python2_storage():
            return 1
        if not self.zd_up:
            pid, managed = self.server_process()
            if pid and not managed:
                print("already running in the foreground, not under "
                      f"zdaemon; pid={pid}")
                return 0
            if pid:
                # Its manager was killed: nothing would restart it after a
                # crash.  Stop it cleanly and start it under a new one.
                print(f"the server (pid={pid}) lost its daemon manager; "
                      "stopping it to start it under a new one")
                if not self.stop_orphan(pid):
                    print(f"process {pid} did not stop; not started",
                          file=sys.stderr)
                    return 1
            elif self.accepts_connections():
                return self.address_in_use()
        marks = self.log_marks()
        deadline = time.monotonic() + self.options.start_timeout
        # zdctl starts the daemon manager with os.spawnvp: a new Python
        # importing this script's modules again (~0.15 s).  A fork has them.
        os.spawnvp, spawnvp = functools.partial(
            spawn_manager, schema=self.options.schema), os.spawnvp
        try:
            failed = super().do_start(arg)
        finally:
            os.spawnvp = spawnvp
        if failed:
            self.stop_manager()
            return self.explain_failure("the server did not start", marks)
        return self.wait_until_ready(deadline, marks)

    def wait_until_ready(self, deadline, marks):
        """After zdrun reports a pid: wait for the address to accept.

        A server that exits meanwhile crashed while starting: zdrun is
        told to stop instead of respawning it after start has failed."""
        first_pid = self.zd_pid
        while not self.accepts_connections():
            self.get_status()
            if not self.zd_up or self.zd_pid != first_pid:
                self.stop_manager()
                return self.explain_failure(
                    "the server exited while starting", marks)
            if time.monotonic() > deadline:
                return self.explain_failure(
                    f"the server does not accept connections on "
                    f"{self.address_text()} after {self.options.start_timeout}"
                    " s (start-timeout); it may still be opening a large "
                    "database", marks)
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
            logs.follow(path)
        except KeyboardInterrupt:
            print()
        except OSError as e:
            print(f"cannot read {path}: {e.strerror or e}", file=sys.stderr)
            return 1
        return 0

    def do_stop(self, arg):
        self.get_status()
        if not self.zd_up:
            pid, managed = self.server_process()
            if pid and managed:
                if not self.stop_orphan(pid):
                    print(f"process {pid} did not stop", file=sys.stderr)
                    return 1
                print("daemon process stopped (it had lost its daemon "
                      "manager)")
                return 0
            if pid:
                return not_ours(pid, "stop")
            print("not running")
            return 0
        return super().do_stop(arg)

    def do_restart(self, arg):
        self.get_status()
        if not self.zd_pid:
            pid, managed = (None, False) if self.zd_up else (
                self.server_process())
            if pid and not managed:
                # "already running" from start would pass for a restart.
                return not_ours(pid, "restart")
            return self.do_start(arg)
        marks = self.log_marks()
        deadline = time.monotonic() + self.options.start_timeout
        old = self.zd_pid
        self.send_action("restart")
        if self.awhile(lambda waited: self.zd_pid not in (0, old),
                       "restarted, pid=%(zd_pid)d"):
            return self.explain_failure("the server did not restart", marks)
        return self.wait_until_ready(deadline, marks)

    def do_status(self, arg=""):
        return processes.status(
            arg, replication.role_lines(self.roles()), self.options.sockname,
            self.options.configroot.zeo.pid_filename, self.options.program[0],
            self.accepts_connections)


    def server_process(self):
        """(pid, managed) of the part's server (`processes.server_process`)."""
        return processes.server_process(
            self.options.configroot.zeo.pid_filename,
            self.options.program[0], self.accepts_connections)

    def stop_orphan(self, pid):
        """Stop the server PID that no manager watches any more as zdaemon
        would: SIGTERM, and SIGKILL after stop-timeout.  True once gone."""
        timeout = self.options.configroot.runner.stop_timeout
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not running(pid):
                    return True
                time.sleep(POLL)
        return not running(pid)

    def running_pid(self):
        """The server's pid, however it runs (under zdaemon, orphaned or
        in the foreground), or None."""
        self.get_status()
        if self.zd_pid:
            return self.zd_pid
        return None if self.zd_up else self.server_process()[0]

    def do_kill(self, arg):
        name = arg.strip() or "TERM"
        try:
            signame = zdaemon.zdoptions.name2signal(name)
        except ValueError:
            print(f"kill: {name!r} is not a signal; give a name such as "
                  "TERM, HUP or USR2, or a number", file=sys.stderr)
            return USAGE
        pid = self.running_pid()
        if not pid:
            print("kill: the server is not running; no signal sent",
                  file=sys.stderr)
            return 1
        try:
            os.kill(pid, getattr(signal, signame))
        except OSError as e:
            print(f"kill: cannot signal process {pid}: {e.strerror}",
                  file=sys.stderr)
            return 1
        print(f"signal {signame} sent to process {pid}")
        return 0

    def help_kill(self):
        print("kill [SIGNAL] -- send SIGNAL (default TERM) to the server")

    def do_logreopen(self, arg):
        """Reopen the logs after logrotate moved them: the transcript (the
        manager's) and the server's (SIGUSR2).  A stopped server has
        nothing to reopen, which is not an error for logrotate."""
        if not self.running_pid():
            print("not running; no log to reopen")
            return 0
        if self.zd_up:
            self.send_action("reopen_transcript")
        return self.do_kill("USR2")

    def help_logreopen(self):
        print("logreopen -- make the server reopen its log files (after "
              "logrotate moved them)")

    def do_show(self, arg):
        topic = arg.strip() or "options"
        if not hasattr(self, f"show_{topic}"):
            print(f"show: unknown topic {topic!r}; use show options, show "
                  "python or show all", file=sys.stderr)
            return USAGE
        getattr(self, f"show_{topic}")()
        return 0

    def do_help(self, arg):
        topic = arg.strip().replace("-", "_")
        if topic and not hasattr(self, f"do_{topic}"):
            print(f"help: no command {topic!r}; commands: "
                  f"{', '.join(self.command_names())}", file=sys.stderr)
            return USAGE
        super().do_help(topic)
        return 0

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
        if self.refuse_python2_storage():
            # The server's status for a storage it cannot open, which
            # process managers are told not to restart on (systemd unit).
            return 2
        # The server logs to its log file only: a silent terminal would
        # leave someone at it guessing.
        print(f"running the server in the foreground on "
              f"{self.address_text()}; its log: {self.options.logfile}; "
              f"{'Ctrl-C' if sys.stdin.isatty() else 'SIGTERM'} stops it")
        return run_program(self.options.program + self.options.args[1:])

    def do_fg(self, arg):
        return self.do_foreground(arg)

    def do_console(self, arg):
        return self.do_foreground(arg)

    def help_foreground(self):
        print("foreground, fg, console -- run the server in the foreground "
              "(it exits when the server does)")

    help_fg = help_console = help_foreground

    def do_convert_py3(self, arg):
        # Imported here: it brings subprocess and shutil, which the
        # everyday commands do not need.
        from plone.recipe.zope2zeoserver import convert
        options, status = convert.parse_arguments(arg)
        if options is None:
            return status
        pid = self.running_pid()
        if pid:
            ours = self.zd_up or self.server_process()[1]  # zdaemon's
            how = (f"stop it with bin/{self.part} stop" if ours
                   else manager_command(pid, "stop"))
            print(f"convert-py3: the server is running (pid={pid}); {how}, "
                  "then run convert-py3 again", file=sys.stderr)
            return 1
        import importlib.util
        if importlib.util.find_spec("zodbupdate") is None:
            print("convert-py3: zodbupdate is not on this part's Python path;"
                  " rerun bin/buildout with this recipe's version, whose "
                  "server extra brings it", file=sys.stderr)
            return 1
        log_dir = os.path.dirname(self.options.logfile)
        try:
            os.makedirs(log_dir, exist_ok=True)
        except OSError as e:
            print(f"convert-py3: cannot make the log directory: "
                  f"{e.strerror}: {log_dir}", file=sys.stderr)
            return 1
        secondaries = {name for name, role in self.roles().items()
                       if role["role"] == "secondary"}
        return convert.convert_storages(
            self.file_storages(), self.part, options.encoding,
            options.fallbacks,
            os.path.join(log_dir, f"{self.part}-convert-py3.log"),
            secondaries)

    def help_convert_py3(self):
        from plone.recipe.zope2zeoserver import convert
        convert.parser().print_help()

    # -- statistics ------------------------------------------------------

    def do_stats(self, arg):
        return statistics_client().stats_command(self.address, arg, self.tls,
                                                 self.roles())

    def roles(self):
        """{storage name: role} of the storages that are replicated or
        fan out (`replication.role`), from zeo.conf."""
        found = {}
        for opener in self.options.configroot.storages:
            role = replication.role(opener)
            if role:
                found[opener.name] = role
        return found

    def help_stats(self):
        statistics_client().stats_parser().print_help()

    def do_check(self, arg):
        return statistics_client().check_command(self.address, arg, self.tls)

    def help_check(self):
        statistics_client().check_parser().print_help()

    def default(self, line):
        print(f"unknown command {line.split()[0]!r}; commands: "
              f"{', '.join(self.command_names())}", file=sys.stderr)
        return 2

    def print_topics(self, header, cmds, cmdlen, maxcol):
        """help's lists, with commands spelled as they are typed, and
        without EOF (Ctrl-D leaving the interactive shell)."""
        super().print_topics(header, [name.replace("_", "-")
                                      for name in cmds or [] if name != "EOF"],
                             cmdlen, maxcol)

    def command_names(self):
        return sorted(name[3:].replace("_", "-") for name in dir(self)
                      if name.startswith("do_") and name != "do_EOF")

    def do_EOF(self, arg):
        print()
        return True


def parse_command(parser, arg):
    # Here, not at the top: argparse is for these commands only.
    from plone.recipe.zope2zeoserver import arguments
    return arguments.parse_command(parser, arg)


def statistics_client():
    """The `stats` module, imported here and not at the top: it brings
    json and asyncio (through `monitor`), which start, stop and status
    do not need and should not pay for (test_ctl checks)."""
    from plone.recipe.zope2zeoserver import stats
    return stats


def not_ours(pid, verb):
    """Refuse to VERB the server PID that another process manager runs in
    the foreground, naming that manager's command: 1."""
    print(f"the server (pid={pid}) runs in the foreground, not under "
          f"zdaemon: {manager_command(pid, verb)}", file=sys.stderr)
    return 1


def spawn_manager(mode, file, args, schema=None):
    """os.spawnvp(MODE, FILE, ARGS) as zdctl's start calls it (ARGS: this
    Python, this script, zdrun's arguments), in a fork: the daemon
    manager runs in the child with the modules this process has loaded,
    and SCHEMA, ZEO's schema as it loaded it.  Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        os.environ.pop("DAEMON_MANAGER_MODE", None)  # zdctl set it for ARGS
        status = run_manager(args[2:], schema) or 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else int(bool(e.code))
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def run_manager(args, schema=None):
    """zdaemon's manager (zdrun) with ARGS, which runs the server; with
    SCHEMA it does not load ZEO's schema again."""
    import zdaemon.zdrun
    os.environ[MANAGED_ENV] = "1"
    # zdaemon.zdrun.main, but with the schema given.
    manager = zdaemon.zdrun.Daemonizer()
    manager.options = zdaemon.zdrun.ZDRunOptions()
    manager.options.schema = schema
    try:
        manager.options.realize(args)
        manager.logger = manager.options.logger
        return manager.run()
    except OSError as e:  # e.g. a log directory it may not write
        where = f": {e.filename}" if e.filename else ""
        fail(f"the daemon manager cannot start: {e.strerror or e}{where}")


def manager_failed():
    """True if the zdaemon manager `start` spawned exited with an error
    (it already said why on stderr).  Its parent half exits 0 once the
    daemon has forked off; there is nothing to wait for after that."""
    try:
        pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return pid != 0 and os.waitstatus_to_exitcode(status) != 0


def run_program(program):
    """Become PROGRAM (fg).  Windows has no exec: run it and return its
    exit status.  Ctrl-C there reaches both processes; the server stops
    cleanly on it, so keep waiting for it instead of killing it (as
    subprocess.call would)."""
    sys.stdout.flush()
    if not WINDOWS:
        os.execv(program[0], program)
    import subprocess
    if not os.path.exists(program[0]) and os.path.exists(program[0] + ".exe"):
        # What buildout makes there: runzeo.exe (and runzeo-script.py).
        program = [program[0] + ".exe"] + list(program[1:])
    process = subprocess.Popen(program)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            pass


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def main(zeo_conf, buildout_dir, args=None, tls=None):
    """Entry point of bin/<part>; ZEO_CONF, BUILDOUT_DIR and TLS (the
    client certificate for stats and check) are baked in."""
    os.environ[BUILDOUT_ENV] = buildout_dir
    if args is None:
        args = sys.argv[1:]
    if os.environ.pop("DAEMON_MANAGER_MODE", None):
        # zdctl re-ran this script as the process manager (zdrun); ours
        # forks instead (`spawn_manager`), zdctl's own commands do not.
        return run_manager(args)
    command = args[0] if args else ""
    if os.environ.get("SUPERVISOR_ENABLED") and command in FOREGROUND_COMMANDS:
        # supervisord manages the process itself: never fork.
        args = ["fg"]
    elif WINDOWS and command not in ("fg", "foreground", "console", "help"):
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
