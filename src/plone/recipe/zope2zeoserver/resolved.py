"""parts/<part>/etc/resolved.conf: what the part's zeo.conf resolves to,
for the commands that should not pay for reading it.

`bin/<part> status` and `check` answer from it without ZConfig or
zdaemon (control.py), and a rerun of bin/buildout finds the storages
there.  bin/buildout writes it beside zeo.conf; it counts only
while it is newer than zeo.conf and the zeo-conf file, so an edited
zeo-conf file is never answered for with stale values (the control
script then reads zeo.conf itself, and the next bin/buildout writes it
again).  One "key value" a line; paths inside the buildout may start
with $(ZOPE2ZEOSERVER_BUILDOUT), as in zeo.conf.  Standard library only.
"""

import os

from plone.recipe.zope2zeoserver.files import BUILDOUT_ENV

NAME = "resolved.conf"
HEADER = ("# What zeo.conf resolves to, for bin/<part> status.  Written by "
          "bin/buildout;\n# ignored once zeo.conf or a source is newer.\n")


def path_beside(zeo_conf):
    return os.path.join(os.path.dirname(zeo_conf), NAME)


def write(path, items):
    """Write ITEMS ((key, value) pairs, a key may repeat) to PATH."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER + "".join(f"{key} {value}\n" for key, value in items))


def read(path, buildout_dir):
    """{key: [values]} of PATH, or None when it is missing, unreadable,
    or older than one of its sources."""
    marker = f"$({BUILDOUT_ENV})"
    found = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or " " not in line:
                    continue
                key, value = line.rstrip("\n").split(" ", 1)
                found.setdefault(key, []).append(
                    value.replace(marker, buildout_dir))
        written = os.stat(path).st_mtime_ns
        if any(os.stat(source).st_mtime_ns > written
               for source in found.get("source", ())):
            return None
    except (OSError, UnicodeDecodeError):
        return None
    return found
