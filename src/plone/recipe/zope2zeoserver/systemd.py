"""parts/<part>/etc/<part>.service: a systemd unit running the server.

systemd runs `bin/<part> fg`, which becomes the server: its exit status
and signals are the server's, so Restart=on-failure and ExecReload (log
reopen with SIGUSR2) act on the server itself.
"""

import os

from plone.recipe.zope2zeoserver.zeoconf import template


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
