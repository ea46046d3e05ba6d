"""effective-user: started by root, the control script hands the
directories the server writes to that user before zdaemon drops
privileges, and checks that the user can run the server at all."""

import os
import sys

from plone.recipe.zope2zeoserver import replication
from plone.recipe.zope2zeoserver.files import user_entry


class CannotRun(Exception):
    """The server could not run as effective-user; the message says why
    and what to do."""


def prepare(user, config):
    """Hand the server's files of CONFIG (the loaded zeo.conf) to USER,
    when this process runs as root; raises CannotRun."""
    if user is None or os.geteuid() != 0:
        return
    try:
        entry = user_entry(user)
    except KeyError:
        raise CannotRun(
            f"effective-user {user!r} does not exist on this machine; "
            "create it or change effective-user and rerun bin/buildout")
    paths = server_paths(config)
    problems = {}
    for path in paths:
        try:
            chown_path(path, entry.pw_uid, entry.pw_gid)
        except OSError as e:
            # E.g. a read-only file system: if the user can write there
            # anyway, all is well (check_runs_as finds out).
            problems[path] = e.strerror
    check_runs_as(entry, [p for p in paths if os.path.isdir(p)], problems)


# Run as effective-user: can it import the server, and write DIRECTORIES?
# Prints the first directory it cannot write.
CHECK_AS_USER = """\
import os, sys
import ZEO.runzeo
for path in sys.argv[1:]:
    if not os.access(path, os.W_OK | os.X_OK):
        print(path)
        break
"""


def check_runs_as(entry, directories=(), problems=None):
    """Fail now if the server could not even start as that user (a Python
    or eggs under a private home directory, a data directory it cannot
    reach or write), instead of a crash, or a misleading error from
    zdaemon ("directory ... does not exist"), at start.  PROBLEMS: why
    handing a path to the user failed."""
    import subprocess
    try:
        result = subprocess.run(
            [sys.executable, "-c", CHECK_AS_USER, *directories],
            user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
            capture_output=True, text=True, cwd="/",
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    except OSError as e:
        reason = e.strerror
    else:
        if not result.returncode:
            path = result.stdout.strip()
            if not path:
                return
            why = (problems or {}).get(path, "Permission denied")
            raise CannotRun(
                f"effective-user {entry.pw_name!r} cannot write {path}: "
                f"{why}; give that user write access to it (and access to "
                "the directories above it), or choose another path")
        lines = result.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"exit status {result.returncode}"
    raise CannotRun(
        f"effective-user {entry.pw_name!r} cannot run the server: {reason}; "
        f"make {sys.executable} and the eggs readable by that user")


def server_paths(config):
    """Directories and files the server writes, from the loaded zeo.conf."""
    runner = config.runner
    paths = [runner.socket_name, runner.logfile, runner.transcript,
             config.zeo.pid_filename]
    for _, path, blob_dir in replication.file_storages(config.storages):
        paths += [path, path + ".index", path + ".lock", path + ".tmp"]
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
