"""The systemd units of a part, in parts/<part>/etc/.

<part>.service (systemd-unit) runs the server: systemd runs `bin/<part>
fg`, which becomes the server, so its exit status and signals are the
server's, and Restart=on-failure and ExecReload (log reopen with SIGUSR2)
act on the server itself.

<part>-pack.service and <part>-pack.timer (pack-schedule) run bin/zeopack
when the calendar expression says.  bin/zeopack is a client of the
server, wherever that runs (this unit, supervisord): it needs no server
unit.  Where systemd-analyze is installed, the expression is checked when
the options are read and the written units are verified; it needs no
running systemd.
"""

import logging
import os
import re
import shutil
import subprocess

import zc.buildout

from plone.recipe.zope2zeoserver.zeoconf import template


logger = logging.getLogger("plone.recipe.zope2zeoserver")

# Seconds systemd-analyze gets; it answers in ~10 ms (verify: ~40 ms).
ANALYZE_TIMEOUT = 10

# Spreads the packs of servers scheduled alike, and delays a run caught
# up at boot (Persistent=true) past the server's start.
RANDOM_DELAY = "5min"


def write_units(settings):
    """Write the units SETTINGS ask for; check the pack units."""
    if settings.systemd_unit:
        write(settings.systemd_unit_path, unit_text(settings))
    if settings.pack_schedule:
        write(settings.pack_service_path, pack_service_text(settings))
        write(settings.pack_timer_path, pack_timer_text(settings))
        verify_pack_units(settings)


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def unit_text(settings):
    """The unit file for SETTINGS."""
    user_note = ""
    if settings.effective_user:
        # Not User=: started by root, the control script first hands the
        # server's directories to that user, as `start` does, then runs
        # the server as that user.
        user_note = (f"# The server runs as {settings.effective_user} "
                     "(effective-user): started as root, the control\n"
                     "# script hands it the server's directories, then "
                     "drops privileges.\n")
    return template("systemd.service.in").substitute(
        part=settings.part,
        buildout_dir=settings.buildout_dir,
        description_dir=escape(settings.buildout_dir),
        unit_path=settings.systemd_unit_path,
        unit_name=os.path.basename(settings.systemd_unit_path),
        user_note=user_note,
        exec_start=f"{quote(settings.control_script)} fg",
        working_directory=escape(settings.part_dir),
        stop_timeout=settings.stop_timeout,
    )


def escape(text):
    """TEXT with systemd's specifier character (%) escaped."""
    return text.replace("%", "%%")


def quote(path):
    """PATH as one word of a systemd command line."""
    path = escape(path)
    if any(c in path for c in " \t\"'\\;$"):
        path = '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return path.replace("$", "$$")


def pack_service_text(settings):
    """<part>-pack.service: bin/zeopack, once, as effective-user."""
    user = ""
    if settings.effective_user:
        # As the server's own user: a client needs no root, and reads the
        # TLS client key tls-generate gave that user.
        user = f"User={escape(settings.effective_user)}\n"
    after = ""
    if settings.systemd_unit:
        # Not Wants=: a server stopped on purpose stays stopped, and
        # bin/zeopack says it is down.  At shutdown the pack stops first.
        after = ("After="
                 f"{os.path.basename(settings.systemd_unit_path)}\n")
    return template("systemd-pack.service.in").substitute(
        common_fields(settings), user=user, after=after,
        exec_start=quote(settings.zeopack_path))


def pack_timer_text(settings):
    """<part>-pack.timer: starts <part>-pack.service on pack-schedule."""
    return template("systemd-pack.timer.in").substitute(
        common_fields(settings), random_delay=RANDOM_DELAY)


def common_fields(settings):
    return dict(
        part=settings.part,
        buildout_dir=settings.buildout_dir,
        description_dir=escape(settings.buildout_dir),
        schedule=escape(settings.pack_schedule),
        service_name=os.path.basename(settings.pack_service_path),
        service_path=settings.pack_service_path,
        timer_name=os.path.basename(settings.pack_timer_path),
        timer_path=settings.pack_timer_path,
    )


def analyze(*args):
    """systemd-analyze ARGS (a CompletedProcess), or None when it is
    missing or does not answer."""
    command = shutil.which("systemd-analyze")
    if command is None:
        return None
    try:
        return subprocess.run([command, *args], capture_output=True,
                              text=True, timeout=ANALYZE_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def calendar_problem(expression):
    """What systemd finds wrong with calendar EXPRESSION: its message, or
    '' for nothing, or None where systemd-analyze cannot tell."""
    # "--": an expression starting with "-" is not an option.
    result = analyze("calendar", "--", expression)
    if result is None:
        return None
    if result.returncode == 0:
        return ""
    said = (result.stderr + result.stdout).strip()
    if "Failed to parse calendar" not in said:
        return None  # another problem (an old systemd without "calendar")
    return " ".join(said.split())


def verify_pack_units(settings):
    """Stop buildout on what `systemd-analyze verify` refuses in the pack
    units, warn about what it warns; carry on, saying so, where it cannot
    verify (missing, or failing for reasons of its own, e.g. in a
    container).  It reads the server unit beside them too."""
    shown = f"[{settings.part}] pack-schedule = {settings.pack_schedule!r}"
    paths = [settings.pack_service_path, settings.pack_timer_path]
    names = [os.path.basename(path) for path in paths]
    result = analyze("verify", *paths)
    if result is None:
        why = ("systemd-analyze is not installed"
               if shutil.which("systemd-analyze") is None else
               f"systemd-analyze did not answer within {ANALYZE_TIMEOUT} s")
        logger.info("%s: %s, so neither the calendar expression nor %s "
                    "were checked", shown, why, " and ".join(names))
        return
    etc = os.path.dirname(settings.pack_service_path)
    if settings.systemd_unit:
        names.append(os.path.basename(settings.systemd_unit_path))
    ours = [line for line in result.stderr.splitlines()
            if mentions(line, etc, names)]
    if result.returncode and ours:
        raise zc.buildout.UserError(
            f"{shown}: systemd-analyze verify refuses the units written: "
            + "; ".join(ours))
    if result.returncode:
        said = (result.stderr + result.stdout).strip().splitlines()
        logger.info("%s: systemd-analyze verify could not check %s: %s",
                    shown, " and ".join(names),
                    said[0] if said else f"exit status {result.returncode}")
    for line in ours:
        logger.warning("%s: systemd-analyze verify: %s", shown, line)


def mentions(line, directory, names):
    """True if systemd-analyze's LINE is about a file in DIRECTORY or a
    unit among NAMES, rather than about the machine."""
    return (directory + os.sep in line or any(
        re.search(rf"(^|\s){re.escape(name)}(:|\s|$)", line)
        for name in names))
