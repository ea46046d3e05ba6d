"""parts/<part>/etc/resolved.conf: the part's resolved configuration,
the one thing every run-time tool reads.

bin/buildout computes it once, from the zeo.conf it wrote (that is, from
the options or from the zeo-conf file) and from the options that are no
part of zeo.conf (pack-days, the client certificate of our tools), and
writes it beside zeo.conf.  `bin/<part> status`, `stats` and `check`,
bin/zeopack and bin/repozo read it instead of zeo.conf: no ZConfig, no
zdaemon, no buildout options at run time.

What comes from zeo.conf counts only while the file is newer than
zeo.conf and the zeo-conf file: when one of them was edited since,
`load` reads zeo.conf again (with ZConfig) instead of acting on stale
values, and the next bin/buildout writes the file anew.  One "key value"
a line; paths inside the buildout may start with $(ZOPE2ZEOSERVER_BUILDOUT),
as in zeo.conf.  Standard library only, unless zeo.conf must be read.
"""

import contextlib
import os

from plone.recipe.zope2zeoserver.files import BUILDOUT_ENV

NAME = "resolved.conf"
HEADER = ("# The part's configuration as bin/<part>, zeopack and repozo "
          "read it.  Written by\n# bin/buildout; what zeo.conf gives is "
          "read again once zeo.conf or a source is newer.\n")
# Keys every resolved.conf of this version has.
REQUIRED = {"address", "storage", "start-timeout"}
# Keys from the options, not from zeo.conf: never stale.
PART_KEYS = ("pack-days", "client-certificate", "client-key",
             "server-certificate")


class Unusable(Exception):
    """No resolved.conf (or one this version cannot read), or a zeo.conf
    that cannot be read again: the message says what to do."""


def path_beside(zeo_conf):
    return os.path.join(os.path.dirname(zeo_conf), NAME)


def write(path, items):
    """Write ITEMS ((key, value) pairs, a key may repeat) to PATH."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER + "".join(f"{key} {value}\n" for key, value in items))


def read(path, buildout_dir):
    """({key: [values]}, fresh) of PATH; fresh is false once a source is
    newer.  ({}, False) when it is missing or unreadable."""
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
        fresh = not any(os.stat(source).st_mtime_ns > written
                        for source in found.get("source", ()))
    except (OSError, UnicodeDecodeError):
        return {}, False
    return found, fresh


def zeo_conf_items(config, spell=str):
    """(key, value) pairs of CONFIG, a zeo.conf as ZConfig loaded it
    (`load_zeo_conf`); SPELL writes a path (e.g. with $(...))."""
    import json

    from plone.recipe.zope2zeoserver import replication

    def absolute(path):
        path = server_path(config, path)
        return path and spell(path)

    address = config.zeo.address.address
    items = [
        ("socket-name", absolute(config.runner.socket_name)),
        ("pid-file", absolute(config.zeo.pid_filename)),
        ("program", spell(config.runner.program[0])),
        ("start-timeout", str(config.runner.start_timeout)),
        ("stop-timeout", str(config.runner.stop_timeout)),
        ("address", absolute(address) if isinstance(address, str)
         else f"{address[0]} {address[1]}")]
    for opener in config.storages:
        items.append(("storage", opener.name))
        role = replication.role(opener)
        if role:
            items.append(("role", f"{opener.name} {json.dumps(role)}"))
    # Their files and blobs, inside <zrs> sections too.
    for name, path, blob_dir in replication.storages(config.storages):
        if path:
            items.append(("file", f"{name} {absolute(path)}"))
        if blob_dir:
            items.append(("blobs", f"{name} {absolute(blob_dir)}"))
    return [(key, value) for key, value in items if value]


def server_path(config, path):
    """PATH of CONFIG (a loaded zeo.conf) as the server finds it: it runs
    in the runner's directory (the part's), where a relative one is."""
    if path and config.runner.directory:
        return os.path.join(config.runner.directory, path)
    return path


def schema_path():
    """ZEO's schema for a zeo.conf with a <runner> section (zeoctl's)."""
    import ZEO
    return os.path.join(os.path.dirname(ZEO.__file__), "zeoctl.xml")


def load_zeo_conf(path, buildout_dir):
    """The zeo.conf at PATH as ZConfig loads it for the server; raises
    ZConfig.ConfigurationError."""
    import ZConfig
    with buildout_env(buildout_dir):
        config, _ = ZConfig.loadConfig(ZConfig.loadSchema(schema_path()),
                                       path)
    return config


@contextlib.contextmanager
def buildout_env(buildout_dir):
    """Let $(ZOPE2ZEOSERVER_BUILDOUT) in zeo.conf resolve meanwhile."""
    previous = os.environ.get(BUILDOUT_ENV)
    os.environ[BUILDOUT_ENV] = buildout_dir
    try:
        yield
    finally:
        if previous is None:
            del os.environ[BUILDOUT_ENV]
        else:
            os.environ[BUILDOUT_ENV] = previous


def load(zeo_conf, buildout_dir):
    """The `Resolved` configuration of the part whose zeo.conf is
    ZEO_CONF; raises Unusable."""
    path = path_beside(zeo_conf)
    found, fresh = read(path, buildout_dir)
    if not REQUIRED <= found.keys():
        raise Unusable(f"{path} is missing or was written by another "
                       "version of the recipe; rerun bin/buildout")
    if not fresh:
        import ZConfig
        try:
            config = load_zeo_conf(zeo_conf, buildout_dir)
        except ZConfig.ConfigurationError as e:
            raise Unusable(f"{zeo_conf} (or the zeo-conf file it comes "
                           f"from) changed and cannot be read: "
                           f"{' '.join(str(e).split())}; fix it and rerun "
                           "bin/buildout")
        found = {key: values for key, values in found.items()
                 if key in PART_KEYS or key == "source"}
        for key, value in zeo_conf_items(config):
            found.setdefault(key, []).append(value)
    return Resolved(found, changed=not fresh)


class Resolved:
    """What resolved.conf says, for the tools: {key: [values]} behind
    names."""

    def __init__(self, found, changed=False):
        self.found = found
        # Read again from a zeo.conf (or zeo-conf file) newer than the
        # file: a server started before the edit still runs the old one.
        self.changed = changed

    def changed_note(self):
        """The line the tools print when CHANGED, or None."""
        if not self.changed:
            return None
        return ("note: zeo.conf (or the zeo-conf file) changed since "
                "bin/buildout ran; this uses the new settings, a server "
                "started before the change still runs the old ones "
                "(restart it, and rerun bin/buildout)")

    def one(self, key, default=None):
        return self.found.get(key, [default])[0]

    def named(self, key):
        """{storage name: value} of the KEY lines ("NAME VALUE")."""
        return dict(line.split(" ", 1) for line in self.found.get(key, ()))

    @property
    def address(self):
        """The server's address, as zeo.conf's: a path or (host, port)."""
        address = self.one("address")
        if address.startswith("/"):
            return address
        host, port = address.rsplit(" ", 1)
        return host, int(port)

    @property
    def storages(self):
        """The names of the storages served, in zeo.conf's order."""
        return self.found.get("storage", [])

    @property
    def files(self):
        """{storage name: FileStorage path}."""
        return self.named("file")

    @property
    def blob_dirs(self):
        return self.named("blobs")

    @property
    def roles(self):
        """{storage name: `replication.role`} of replicated storages."""
        if "role" not in self.found:
            return {}  # without json: status pays for every import
        import json
        return {name: json.loads(role)
                for name, role in self.named("role").items()}

    @property
    def stop_limit(self):
        """Seconds `stop` waits for the server (`processes.wait_limit`)."""
        from plone.recipe.zope2zeoserver.processes import wait_limit
        return wait_limit(float(self.one("start-timeout")),
                          float(self.one("stop-timeout")))

    @property
    def pack_days(self):
        return float(self.one("pack-days", "1"))

    @property
    def tls(self):
        """The client certificate, its key and the server certificate our
        tools use when the server requires TLS (see `tlsclient`), or None."""
        certificate = self.one("client-certificate")
        if certificate is None:
            return None
        return {"certificate": certificate, "key": self.one("client-key"),
                "server_certificate": self.one("server-certificate")}
