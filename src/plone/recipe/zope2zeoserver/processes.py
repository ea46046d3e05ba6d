"""The part's server process as the control script finds it: asking
zdaemon's manager over its socket, or the process named by the pid file
(read from /proc), and `status` from what they say.

Standard library only: `status` runs from here without zdaemon, ZConfig
or ZEO (see control.py), and the control script's commands use the same
functions.
"""

import os
import socket
import sys

# Set in the environment of the zdaemon manager, so of the server it
# starts: a server with it whose manager does not answer lost its manager
# (kill -9); one without it runs in the foreground under another manager.
MANAGED_ENV = "ZOPE2ZEOSERVER_MANAGED"
STATUS_NOT_RUNNING = 3  # LSB: program is not running
STATUS_UNKNOWN = 4  # LSB: status unknown (status given wrong arguments)


def ask_manager(socket_name, action="status"):
    """zdaemon's manager's answer to ACTION (its text), or None when no
    manager listens on SOCKET_NAME."""
    if not hasattr(socket, "AF_UNIX"):  # Windows: no zdaemon
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(socket_name)
            s.sendall(action.encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while data := s.recv(1000):
                answer += data
        except OSError:
            return None
    return answer.decode()


def manager_pid(answer):
    """(manager up, pid of the server it runs or 0) from ANSWER (no re:
    status pays for every import)."""
    for line in (answer or "").splitlines():
        key, _, value = line.partition("=")
        if key == "application" and value.isdigit():
            return True, int(value)
    return False, 0


def server_process(pid_file, program, accepts):
    """(pid, managed): the part's server process named by PID_FILE, or
    (None, False).  MANAGED: a zdaemon manager started it.

    The pid counts only if that process runs PROGRAM (the part's runzeo):
    after a kill -9 the pid file stays behind, and its pid may belong to
    an unrelated process by now, which must never be signalled.  Without
    /proc (not Linux) a live pid counts when ACCEPTS() (the server's
    address answers), as a server run in the foreground.
    """
    try:
        with open(pid_file) as f:
            pid = int(f.read())
    except (OSError, ValueError, TypeError):
        return None, False
    if not os.path.isdir("/proc/self"):
        return (pid if running(pid) and accepts() else None), False
    arguments = proc_file(pid, "cmdline").split(b"\0")
    program = os.path.realpath(program)
    if not any(os.path.realpath(os.fsdecode(a)) == program
               for a in arguments if a) or not running(pid):
        return None, False
    environment = proc_file(pid, "environ").split(b"\0")
    return pid, f"{MANAGED_ENV}=1".encode() in environment


def status(arg, roles, socket_name, pid_file, program, accepts):
    """`status [-l]`: what runs, in words and as an LSB exit status.
    ROLES: a line for each replicated storage; the rest as in
    `server_process`."""
    if arg.strip() not in ("", "-l"):
        print(f"status: unknown argument {arg.strip()!r}; use status or "
              "status -l", file=sys.stderr)
        return STATUS_UNKNOWN
    for line in roles:
        print(line)
    answer = ask_manager(socket_name)
    up, pid = manager_pid(answer)
    if not up:
        found, managed = server_process(pid_file, program, accepts)
        if found and managed:
            print("program running without its daemon manager (it was "
                  f"killed); pid={found}; start or restart puts it under a "
                  "new one")
            return 0
        if found:
            print(f"program running in the foreground, not under zdaemon; "
                  f"pid={found}")
            return 0
        print("daemon manager not running")
    elif not pid:
        print("daemon manager running; daemon process not running")
    else:
        print(f"program running; pid={pid}")
    if arg.strip() == "-l" and up:
        print(answer)
    return 0 if pid else STATUS_NOT_RUNNING


def wait_limit(start_timeout, stop_timeout):
    """Seconds the control script waits for the daemon manager to report
    a start or stop: the longer of the runner's timeouts, and 5 more."""
    return max(start_timeout, stop_timeout) + 5


def stop(socket_name, limit, poll=0.01):
    """`stop` of the server zdaemon's manager on SOCKET_NAME runs, as
    zdctl's: the manager stops it; wait at most LIMIT seconds for that."""
    import time
    ask_manager(socket_name, "stop")
    deadline = time.monotonic() + limit
    while manager_pid(ask_manager(socket_name))[1]:
        if time.monotonic() > deadline:
            print(f"gave up waiting after {limit:g} s", file=sys.stderr)
            return 1
        time.sleep(poll)
    print("daemon process stopped")
    return 0


def manager_command(pid, verb):
    """How to VERB (stop, restart) the server PID that a process manager
    runs in the foreground: supervisord's own command where the
    variables it sets in its programs' environment name the program."""
    entries = proc_file(pid, "environ").split(b"\0")
    environment = dict(entry.split(b"=", 1) for entry in entries
                       if b"=" in entry)
    name = environment.get(b"SUPERVISOR_PROCESS_NAME", b"").decode()
    if name:
        group = environment.get(b"SUPERVISOR_GROUP_NAME", b"").decode()
        program = name if group in ("", name) else f"{group}:{name}"
        return f"{verb} it with supervisorctl {verb} {program}"
    return f"{verb} it with the process manager that started it"


def proc_file(pid, name):
    """/proc/PID/NAME, or b"" when it cannot be read."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def running(pid):
    """True while PID runs; a zombie (dead, waiting to be reaped by a
    parent that may never do so) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = proc_file(pid, "stat").rpartition(b")")[2].split()
    return not state or state[0] != b"Z"
