"""zeo.conf: settings in, text out, checked against ZEO's own schema."""

import dataclasses
import io
import os
import re
import string

from plone.recipe.zope2zeoserver import resolved
from plone.recipe.zope2zeoserver.files import BUILDOUT_ENV

# ZConfig and ZEO are imported where a file is read: bin/buildout renders
# zeo.conf on every run without them (recipe.py makes them importable when
# it checks the file).


HERE = os.path.dirname(__file__)

# The ZConfig component (component.xml) that defines the <zrs> section.
COMPONENT = "plone.recipe.zope2zeoserver"


def template(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return string.Template(f.read())


def conf_path(settings, path):
    """PATH as zeo.conf should spell it: through $(BUILDOUT_ENV) when the
    buildout uses relative paths and PATH lies inside it."""
    base = settings.relative_paths
    if base and (path == base or path.startswith(base + os.sep)):
        return f"$({BUILDOUT_ENV})" + path[len(base):]
    return path


def zeo_conf_text(settings):
    """The complete zeo.conf for SETTINGS."""
    if settings.server_conf:  # the zeo-conf file, read already
        return settings.server_conf.text
    if settings.zeo_conf:
        return included_conf_text(settings)
    return template("zeo.conf.in").substitute(
        part=settings.part,
        instance=conf_path(settings, settings.part_dir),
        address=address_text(settings),
        read_only=on_off(settings.read_only),
        invalidation_queue_size=settings.invalidation_queue_size,
        pid_file=conf_path(settings, settings.pid_file),
        zeo_optional=optional_lines(
            ("invalidation-age", settings.invalidation_age),
            ("transaction-timeout", settings.transaction_timeout),
            ("client-conflict-resolution",
             on_off(settings.client_conflict_resolution)),
            ("msgpack", on_off(settings.msgpack)),
        ),
        ssl=ssl_text(settings),
        imports=(f"%import {COMPONENT}\n" if settings.replicates else ""),
        storage=storage_text(settings),
        log_level=settings.zeo_log_level,
        log_handler=log_handler_text(settings),
        runner=runner_text(settings),
        additional=settings.zeo_conf_additional or "",
    )


def included_conf_text(settings):
    """zeo-conf is the user's file: include it, and add the runner section
    the control script needs unless the file has one of its own."""
    lines = [
        f"# ZEO server configuration of buildout part [{settings.part}]:",
        "# the file named by the zeo-conf option, included as it is.",
        f"%define INSTANCE {conf_path(settings, settings.part_dir)}",
        f"%include {conf_path(settings, settings.zeo_conf)}",
        "",
    ]
    if not has_runner_section(settings.zeo_conf):
        lines.append(runner_text(settings))
    return "\n".join(lines)


def has_runner_section(path):
    with open(path, encoding="utf-8") as f:
        return re.search(r"^\s*<runner\b", f.read(),
                         re.IGNORECASE | re.MULTILINE) is not None


def address_text(settings, address=None):
    """ADDRESS (default: the server's) as zeo.conf spells it."""
    address = address or settings.address
    if address.is_unix:
        return conf_path(settings, address.path)
    return str(address)


def ssl_text(settings):
    """ZEO's <ssl> section: the server's certificate and key, and the
    client certificates it trusts (ZEO requires them with TLS)."""
    if settings.tls is None:
        return ""
    return "".join([
        "  <ssl>\n",
        f"    certificate {conf_path(settings, settings.tls.certificate)}\n",
        f"    key {conf_path(settings, settings.tls.key)}\n",
        f"    authenticate {conf_path(settings, settings.tls.authenticate)}\n",
        "  </ssl>\n",
    ])


def storage_text(settings):
    """The storage section: the file storage, inside a <zrs> section
    when it is replicated; for a fan-out, a read-only <zeoclient> of the
    upstream server instead."""
    if settings.upstream:
        return zeoclient_text(settings)
    name = settings.storage_number
    lines = optional_lines(
        ("path", conf_path(settings, settings.file_storage)),
        ("blob-dir", settings.blob_storage and
         conf_path(settings, settings.blob_storage)),
        ("pack-gc", on_off(settings.pack_gc)),
        ("pack-keep-old", on_off(settings.pack_keep_old)),
    )
    if not settings.replicates:
        return f"<filestorage {name}>\n{lines}</filestorage>\n"
    # The <zrs> section of this package's component.xml (replication.py):
    # zc.zrs's, on ZODB 6.
    return "".join([
        f"<zrs {name}>\n",
        optional_lines(
            ("replicate-to", settings.replicate_to
             and address_text(settings, settings.replicate_to)),
            ("replicate-from", settings.replicate_from
             and address_text(settings, settings.replicate_from)),
            ("keep-alive-delay", settings.keep_alive_delay)),
        "  <filestorage>\n",
        indent(lines, "  ") + "\n",
        "  </filestorage>\n",
        "</zrs>\n",
    ])


def zeoclient_text(settings):
    """Fan-out: the upstream server's storage, read-only, cached here.
    ``wait false``: the server starts while the upstream is down (its
    clients get ClientDisconnected) and connects once it answers, instead
    of failing to start and being restarted by zdaemon until then."""
    return "".join([
        f"<zeoclient {settings.storage_number}>\n",
        optional_lines(
            ("server", address_text(settings, settings.upstream)),
            ("storage", settings.storage_number),
            ("read-only", "true"),
            ("wait", "false"),
            ("cache-size", settings.upstream_cache_size),
            ("blob-dir", settings.blob_storage and
             conf_path(settings, settings.blob_storage))),
        "</zeoclient>\n",
    ])


def log_handler_text(settings):
    if settings.zeo_log_custom:
        return indent(settings.zeo_log_custom.strip(), "  ")
    lines = ["  <logfile>",
             f"    path {conf_path(settings, settings.zeo_log)}",
             f"    format {settings.zeo_log_format}"]
    if settings.zeo_log_max_size:
        lines.append(f"    max-size {settings.zeo_log_max_size}")
    if settings.zeo_log_old_files is not None:
        lines.append(f"    old-files {settings.zeo_log_old_files}")
    lines.append("  </logfile>")
    return "\n".join(lines)


def runner_text(settings):
    user = (f"  user {settings.effective_user}\n"
            if settings.effective_user else "")
    return template("runner.conf.in").substitute(
        runzeo=conf_path(settings, settings.runzeo_path),
        socket_name=conf_path(settings, settings.socket_name),
        instance=conf_path(settings, settings.part_dir),
        start_timeout=settings.start_timeout,
        stop_timeout=settings.stop_timeout,
        zeo_log=conf_path(settings, settings.zeo_log),
        transcript=conf_path(settings, settings.transcript),
        user=user,
    )


def optional_lines(*pairs):
    """`  key value` lines for the values that are set."""
    return "".join(f"  {key} {value}\n" for key, value in pairs
                   if value is not None)


def on_off(flag):
    if flag is None:
        return None
    return "true" if flag else "false"


def indent(text, prefix):
    return "\n".join(prefix + line if line.strip() else line
                     for line in text.splitlines())


@dataclasses.dataclass(frozen=True)
class Storage:
    """A storage the server serves: its name, and its FileStorage file and
    blob directory where it has them."""

    name: str
    path: str = None
    blob_dir: str = None


@dataclasses.dataclass(frozen=True)
class ServerConf:
    """What a zeo.conf makes the server use, as ZConfig reads it."""

    text: str           # the zeo.conf of the part
    config: object      # ZConfig's reading of it (`resolved.load_zeo_conf`)
    address: object     # (host, port) or a unix socket path
    storages: tuple     # Storage, in the file's order
    pid_file: str       # or None
    socket_name: str    # the runner's (zdaemon's) control socket
    logfile: str        # the runner's log (logtail), or None
    ssl: bool           # the server requires TLS client certificates
    dirpaths: tuple     # paths whose directory ZEO wants to exist


def server_conf(settings):
    """The `ServerConf` of the zeo.conf written for SETTINGS (that is, of
    the zeo-conf file), read once per buildout run.

    Nothing has been created yet, so ZEO's check that the directory of a
    path exists is left out of this reading: `missing_directory` makes it
    once the part has made its directories.
    """
    import ZConfig.datatypes
    import ZConfig.loader

    from plone.recipe.zope2zeoserver import replication

    dirpaths = []

    def existing_dirpath(value):
        dirpaths.append(os.path.expanduser(value))
        return dirpaths[-1]

    stock = ZConfig.datatypes.stock_datatypes.copy()
    stock["existing-dirpath"] = existing_dirpath
    loader = ZConfig.loader.SchemaLoader(ZConfig.datatypes.Registry(stock))
    schema = loader.loadURL(resolved.schema_path())
    text = zeo_conf_text(settings)
    with resolved.buildout_env(settings.buildout_dir):
        config, _ = ZConfig.loadConfigFile(
            schema, io.StringIO(text), url=settings.zeo_conf)

    def absolute(path):
        return resolved.server_path(config, path)

    storages = [Storage(name, absolute(path), absolute(blob_dir))
                for name, path, blob_dir in replication.storages(
                    config.storages)]
    address = config.zeo.address.address
    return ServerConf(
        text=text, config=config,
        address=absolute(address) if isinstance(address, str) else address,
        storages=tuple(storages), pid_file=absolute(config.zeo.pid_filename),
        socket_name=absolute(config.runner.socket_name),
        logfile=absolute(config.runner.logfile),
        ssl=config.zeo.ssl is not None,
        dirpaths=tuple(map(absolute, dirpaths)))


def missing_directory(conf):
    """The first path of CONF (a `ServerConf`) whose directory does not
    exist, or None: ZEO would refuse to start on it."""
    for path in conf.dirpaths:
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            return path
    return None
