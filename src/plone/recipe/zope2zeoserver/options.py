"""Every option of a part, parsed and validated once into `Settings`.

Each option is one row of `OPTIONS`: its name, its default, the field of
`Settings` it fills, how it is read and checked (a `Reader` method), and
one line saying what it is.  `Settings`, the defaults and the warning
about an unknown option come from that table, and a test holds README's
option reference to it.  Bad input raises `zc.buildout.UserError` naming
the part, the option and the value, so buildout stops before anything
is written.
"""

import dataclasses
import difflib
import ipaddress
import logging
import math
import os
import re
import socket

try:
    import pwd
except ImportError:  # Windows
    pwd = None

import zc.buildout

from plone.recipe.zope2zeoserver.addresses import describe
from plone.recipe.zope2zeoserver.files import user_entry
from plone.recipe.zope2zeoserver.zeoconf import Storage

# tls.py is imported where TLS options are used: it loads cryptography,
# ~100 ms that every bin/buildout run would otherwise pay.


logger = logging.getLogger("plone.recipe.zope2zeoserver")

LOG_LEVELS = (
    "critical", "fatal", "error", "warn", "warning", "info", "blather",
    "debug", "trace", "all", "notset",
)
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")

# Keys that buildout itself, zc.recipe.egg or this recipe write into the
# part's options; they are not user typos.
MACHINE_KEYS = {
    "recipe", "_b", "_d", "_e", "executable", "eggs-directory",
    "develop-eggs-directory", "find-links", "index", "location",
    "control-script",
}

def user_error(part, option, value, why):
    """The one-line error for option OPTION = VALUE of part PART."""
    return zc.buildout.UserError(f"[{part}] {option} = {value!r}: {why}")


def inside(path, directory):
    """True if PATH is DIRECTORY or lies inside it."""
    return path == directory or path.startswith(directory + os.sep)


@dataclasses.dataclass(frozen=True)
class Address:
    """Where the server listens: a TCP host and port, or a unix socket."""

    host: str = None
    port: int = None
    path: str = None

    @property
    def is_unix(self):
        return self.path is not None

    @classmethod
    def of(cls, address):
        """The Address of ADDRESS as ZConfig reads zeo.conf's: a path, or
        (host, port) where host '' is every interface."""
        if isinstance(address, str):
            return cls(path=address)
        host, port = address
        return cls(host=host or "0.0.0.0", port=port)

    def __str__(self):
        return describe(self.path if self.is_unix else (self.host,
                                                         self.port))


@dataclasses.dataclass(frozen=True)
class TLS:
    """Mutual TLS: the server's certificate and key, the client
    certificates (or CAs) it trusts, and bin/zeopack's own pair."""

    certificate: str
    key: str
    authenticate: str     # PEM file or hashed directory (ZEO's <ssl>)
    pack_certificate: str  # None: no client pair for bin/zeopack
    pack_key: str
    generate: str         # directory where missing files are made, or None
    clients: tuple        # client certificates made there
    server_names: tuple   # names in the server certificate made there

    def files(self):
        """(check, {role: (option, path)}): each check of tls.py with the
        options naming the files it reads."""
        from plone.recipe.zope2zeoserver import tls
        checks = [
            (lambda: tls.check_identity(self.certificate, self.key),
             {"certificate": ("ssl-certificate", self.certificate),
              "key": ("ssl-key", self.key)}),
            (lambda: tls.check_database(self.authenticate),
             {"database": ("authentication-database", self.authenticate)}),
        ]
        if self.pack_certificate:
            checks.append((
                lambda: tls.check_identity(self.pack_certificate,
                                           self.pack_key),
                {"certificate": ("pack-ssl-certificate",
                                 self.pack_certificate),
                 "key": ("pack-ssl-key", self.pack_key)}))
        return checks


class SettingsBase:
    """What a part's `Settings` can tell besides its fields (which come
    from `OPTIONS`)."""

    @property
    def replicates(self):
        """True when the storage is replicated with ZRS (zc.zrs)."""
        return bool(self.replicate_to or self.replicate_from)

    @property
    def zeo_conf_path(self):
        return os.path.join(self.part_dir, "etc", "zeo.conf")

    @property
    def systemd_unit_path(self):
        return os.path.join(self.part_dir, "etc", f"{self.part}.service")

    @property
    def pack_service_path(self):
        return os.path.join(self.part_dir, "etc", f"{self.part}-pack.service")

    @property
    def pack_timer_path(self):
        return os.path.join(self.part_dir, "etc", f"{self.part}-pack.timer")

    @property
    def zeopack_path(self):
        return os.path.join(self.bin_dir, self.zeopack_script_name)

    @property
    def control_script(self):
        return os.path.join(self.bin_dir, self.part)

    @property
    def runzeo_path(self):
        return os.path.join(self.part_dir, "bin", "runzeo")

    @property
    def transcript(self):
        """zdaemon copies the server's stdout/stderr here: what it printed
        before its logging was set up is the reason a start failed."""
        return os.path.join(os.path.dirname(self.zeo_log),
                            f"{self.part}-transcript.log")

    @property
    def storages(self):
        """The storages the server serves (`Storage`), the first being
        bin/zeopack's default."""
        if self.server_conf:
            return self.server_conf.storages
        # A fan-out serves its upstream's storage: no file of its own.
        path = None if self.upstream else self.file_storage
        return (Storage(self.storage_number, path, self.blob_storage),)

    def places(self):
        """(option, path, is_directory) of each place the server writes:
        its files (data, log, pid file, sockets) and blob directories."""
        places = [("file-storage", s.path, False)
                  for s in self.storages if s.path]
        places += [("blob-storage", s.blob_dir, True)
                   for s in self.storages if s.blob_dir]
        places += [("zeo-log", self.zeo_log, False),
                   ("pid-file", self.pid_file, False),
                   ("socket-name", self.socket_name, False)]
        places += [(option, address.path, False) for option, address
                   in self.addresses().items() if address.is_unix]
        return places

    def directories(self):
        """(option, path, directory) of each directory the part makes,
        with the option whose PATH made it: the part's own, then var when
        anything is made inside it, then the server's."""
        made = [("location", self.part_dir, os.path.join(self.part_dir, sub))
                for sub in ("etc", "bin", "var")]
        made.append(("bin-directory", self.bin_dir, self.bin_dir))
        server = [(option, path, path if is_dir else os.path.dirname(path))
                  for option, path, is_dir in self.places()]
        if any(inside(directory, self.var) for _, _, directory in server):
            made.append(("var", self.var, self.var))
        unique = {}
        for option, path, directory in made + server:
            unique.setdefault(directory, (option, path, directory))
        return list(unique.values())

    def addresses(self):
        """option name -> Address, for every address the server listens on."""
        return {option: address for option, address in (
            ("zeo-address", self.address),
            ("monitor-address", self.monitor_address),
            ("metrics-address", self.metrics_address),
            ("replicate-to", self.replicate_to)) if address}


class Reader:
    """Reads raw option values of one part and turns them into Python
    values, raising UserError that names the part and the option."""

    def __init__(self, buildout, name, options):
        self.name = name
        self.options = options
        self.buildout_dir = buildout["buildout"]["directory"]
        self.buildout_options = buildout["buildout"]

    def fail(self, option, value, why):
        raise user_error(self.name, option, value, why)

    var = None  # set once the var option is read; path defaults use it

    def raw(self, option):
        value = self.options.get(option)
        if value is None and DEFAULTS[option] is not None:
            return DEFAULTS[option].replace("{var}", self.var or "").replace(
                "{part}", self.name)
        return value

    def text(self, option):
        value = self.raw(option)
        return value.strip() if value is not None else None

    def path(self, option):
        """An absolute path; relative ones are relative to the buildout."""
        value = self.text(option)
        if not value:
            return None
        return os.path.normpath(os.path.join(
            self.buildout_dir, os.path.expanduser(value)))

    def existing_path(self, option):
        path = self.path(option)
        if path and not os.path.exists(path):
            self.fail(option, self.text(option),
                      f"{path} does not exist; fix the path or remove the option")
        return path

    def integer(self, option, minimum=None, maximum=None):
        return self.parsed(option, int, "expected a whole number", minimum,
                           maximum)

    def number(self, option, minimum=None):
        return self.parsed(option, float, "expected a number", minimum)

    def parsed(self, option, convert, expected, minimum=None, maximum=None):
        """The option as CONVERT (int, float) makes it, within the bounds;
        None when unset.  EXPECTED says what a value that is not must be."""
        value = self.text(option)
        if not value:
            return None
        try:
            number = convert(value)
        except ValueError:
            self.fail(option, value, expected)
        if not math.isfinite(number):
            # nan and inf are no time, size or count.
            self.fail(option, value, "expected a finite number")
        self.check_range(option, value, number, minimum, maximum)
        return number

    def check_range(self, option, value, number, minimum, maximum):
        if minimum is not None and number < minimum:
            self.fail(option, value, f"must be at least {minimum}")
        if maximum is not None and number > maximum:
            self.fail(option, value, f"must be at most {maximum}")

    def boolean(self, option):
        value = self.text(option)
        if value is None or value == "":
            return None
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        self.fail(option, value, "expected true or false")

    def lines(self, option):
        value = self.raw(option) or ""
        return tuple(line.strip() for line in value.splitlines()
                     if line.strip())

    def script_source(self, option, default_name):
        """zeopack/repozo: None = our default, '' = no script, else a file
        (a directory is searched for DEFAULT_NAME.py)."""
        value = self.options.get(option)
        if value is None:
            return None
        if not value.strip():
            return ""
        path = self.existing_path(option)
        if os.path.isdir(path):
            script = os.path.join(path, default_name + ".py")
            if not os.path.isfile(script):
                self.fail(option, value,
                          f"directory {path} has no {default_name}.py")
            return script
        return path

    def script_name(self, option):
        value = self.text(option)
        if not value or os.sep in value or value.startswith("."):
            self.fail(option, value,
                      "expected a plain file name for the script in bin/")
        return value

    def address(self, option="zeo-address"):
        value = self.text(option)
        if not value:
            self.fail(option, value, "expected PORT, HOST:PORT, [IPv6]:PORT "
                      "or a unix socket path")
        if "/" in value:
            return Address(path=os.path.normpath(
                os.path.join(self.buildout_dir, value)))
        host, sep, port = value.rpartition(":")
        if not sep:
            host = "127.0.0.1"
        elif host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            self.check_ip(option, value, host)
        elif ":" in host:
            self.fail(option, value,
                      "write an IPv6 address in brackets, e.g. [::1]:8100")
        elif not host:
            self.fail(option, value, "give a host, e.g. 127.0.0.1:PORT, or "
                      "0.0.0.0:PORT to listen on all interfaces")
        elif not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?",
                              host):
            self.fail(option, value, f"{host!r} is not a host name or address")
        if not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(option, value, "the port must be a number from 1 to "
                      "65535")
        return Address(host=host.lower(), port=int(port))

    def optional_address(self, option):
        return self.address(option) if self.text(option) else None

    def server_address(self, option):
        """The address of another server this one connects to."""
        address = self.optional_address(option)
        if address and address.host in WILDCARD_HOSTS:
            self.fail(option, self.text(option), "that is a wildcard "
                      "address for listening; give the host name or IP "
                      "address of the server to connect to")
        return address

    def check_ip(self, option, value, host):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            self.fail(option, value, f"{host!r} is not an IPv6 address")

    def user(self, option):
        value = self.text(option)
        if not value:
            return None
        if pwd is None:
            self.fail(option, value, "users cannot be switched on this "
                      "system (zdaemon needs POSIX); remove the option")
        try:
            user_entry(value)
        except KeyError:
            self.fail(option, value, "no such user on this machine; create "
                      "the user or fix the name")
        return value

    def log_size(self, option):
        value = self.text(option)
        if not value:
            return None
        if not re.fullmatch(r"\d+\s*(KB|MB|GB)?", value, re.IGNORECASE):
            self.fail(option, value, "expected a size such as 10MB, 500KB "
                      "or a number of bytes")
        return value

    def relative_paths(self, option):
        """The buildout directory when on, else ''; buildout's own
        setting by default."""
        value = self.options.get(
            option, self.buildout_options.get(option, "false"))
        if value.strip().lower() in TRUE_WORDS:
            return self.buildout_dir
        if value.strip().lower() in FALSE_WORDS:
            return ""
        self.fail(option, value, "expected true or false")

    def base_directory(self, option):
        """var: the path defaults of other options start there."""
        self.var = self.path(option)
        return self.var

    def script(self, option):
        """zeopack, repozo: `script_source`, where 1.5 took a Zope 2
        checkout's ZODBTools script by default."""
        return zope2_default(self.script_source(option, option),
                             self.existing_path("zope2-location"), option)

    def calendar(self, option):
        """A systemd calendar expression, which systemd checks where
        systemd-analyze is installed."""
        value = self.text(option)
        if not value:
            return None
        if "\n" in value:
            self.fail(option, value, "give one calendar expression, on one "
                      "line")
        from plone.recipe.zope2zeoserver import systemd  # pack-schedule's
        problem = systemd.calendar_problem(value)
        if problem:
            self.fail(option, value, (
                "systemd does not understand this calendar expression "
                f"({problem}); see systemd.time(7), e.g. 'Sun *-*-* "
                "03:00:00' or 'weekly'"))
        return value

    def log_level(self, option):
        value = self.text(option).lower()
        if value not in LOG_LEVELS and not value.isdigit():
            self.fail(option, value, "expected one of " + ", ".join(
                LOG_LEVELS))
        return value

    def storage_name(self, option):
        value = self.text(option)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value or ""):
            self.fail(option, value,
                      "a storage name is letters, digits, '.', '_' or '-'")
        return value

    def directories(self, option):
        return tuple(os.path.join(self.buildout_dir, line)
                     for line in self.lines(option))

    def code(self, option):
        return self.raw(option) or ""

    def tls(self):
        """The TLS settings, or None when the server speaks plain ZEO.

        ZEO 6's server <ssl> section always requires client certificates,
        so a server certificate comes with an authentication-database.
        tls-generate supplies whatever of the two pairs and the database
        is not set explicitly."""
        if self.text("zeo-conf"):
            for option in TLS_OPTIONS:
                if self.text(option) and (option != "tls-generate"
                                          or self.boolean(option)):
                    self.fail(option, self.text(option), (
                        "zeo-conf replaces the generated zeo.conf: configure "
                        "TLS in that file (<ssl> with certificate, key and "
                        "authenticate inside <zeo>) and remove this option"))
        generate = self.boolean("tls-generate")
        directory = self.path("tls-directory") if generate else None
        certificate, key = self.pair("ssl-certificate", "ssl-key",
                                     directory, "server")
        pack_certificate, pack_key = self.pair(
            "pack-ssl-certificate", "pack-ssl-key", directory, "zeopack")
        database = self.path("authentication-database")
        if generate and not database:
            from plone.recipe.zope2zeoserver import tls
            database = os.path.join(directory, tls.DATABASE)
        if database and not certificate:
            self.fail("authentication-database", self.text(
                "authentication-database"), (
                "clients present certificates only to a server that speaks "
                "TLS: add ssl-certificate and ssl-key (the server's "
                "certificate and key), or tls-generate = true to have them "
                "made"))
        if certificate and not database:
            self.fail("ssl-certificate", self.text("ssl-certificate"), (
                "a ZEO 6 server that speaks TLS always requires client "
                "certificates: add authentication-database (the client "
                "certificates or CA to trust), or tls-generate = true, "
                "which makes one"))
        if pack_certificate and not certificate:
            self.fail("pack-ssl-certificate", self.text(
                "pack-ssl-certificate"), (
                "the server does not speak TLS: add ssl-certificate, ssl-key "
                "and authentication-database (or tls-generate = true), or "
                "remove this option"))
        if not certificate:
            return None
        if self.address().is_unix:
            self.fail("zeo-address", self.text("zeo-address"), (
                "ZEO clients cannot use TLS on a unix socket (its file "
                "permissions decide who connects); listen on HOST:PORT or "
                "remove the TLS options"))
        return TLS(
            certificate=certificate, key=key, authenticate=database,
            pack_certificate=pack_certificate, pack_key=pack_key,
            generate=directory, clients=self.tls_clients() if generate else (),
            server_names=server_names(self.address()) if generate else ())

    def pair(self, cert_option, key_option, directory, name):
        """A certificate and its key: both options, or neither (then the
        pair made under DIRECTORY with tls-generate, or None)."""
        cert, key = self.path(cert_option), self.path(key_option)
        if bool(cert) != bool(key):
            given, missing = ((cert_option, key_option) if cert
                              else (key_option, cert_option))
            self.fail(given, self.text(given),
                      f"set {missing} too: a certificate and its private "
                      "key go together")
        if not cert and directory:
            from plone.recipe.zope2zeoserver import tls
            return tls.pair(directory, name)
        return cert, key

    def tls_clients(self):
        """Names of the client certificates tls-generate makes: bin/zeopack's
        and those of tls-clients."""
        from plone.recipe.zope2zeoserver import tls
        names = ("zeopack",) + tuple(self.text("tls-clients").split())
        for name in names:
            if (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)
                    or name in tls.RESERVED_NAMES):
                self.fail("tls-clients", self.text("tls-clients"), (
                    f"{name!r} cannot name a certificate: use letters, "
                    "digits, '.', '_' or '-', and not "
                    + ", ".join(tls.RESERVED_NAMES)))
        return tuple(dict.fromkeys(names))

    def warn_unknown(self):
        for key in self.options:
            if key in DEFAULTS or key in MACHINE_KEYS:
                continue
            close = difflib.get_close_matches(key, DEFAULTS, n=1)
            hint = (f"; did you mean {close[0]!r} "
                    f"({OPTIONS_BY_NAME[close[0]].doc})?" if close else "")
            logger.warning("[%s] unknown option %r is ignored%s",
                           self.name, key, hint)


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a part: its NAME and DEFAULT as buildout.cfg spells
    them (None: unset; {var} and {part} are filled in per part), the
    `Settings` FIELD it fills with READ(reader, name), of type KIND, and
    what it is in one line (DOC).  Without a field it is read together
    with others (the TLS options, by `Reader.tls`) or only checked.
    TLS: setting it makes the server speak TLS."""

    name: str
    default: str
    doc: str
    field: str = None
    read: object = None
    kind: object = str
    tls: bool = False


def integer(minimum):
    return lambda reader, option: reader.integer(option, minimum)


def number(minimum):
    return lambda reader, option: reader.number(option, minimum)


R = Reader

# Every option, in the order they are read: var first (the path
# defaults name it), zope2-location before the scripts.  README.rst's
# option reference documents each of them (test_units checks).
OPTIONS = (
    Option("var", "var", "base directory of the default paths", "var",
           R.base_directory),
    Option("zope2-location", None, "a Zope 2 checkout whose lib/python and "
           "ZODBTools scripts to use", "zope2_location", R.existing_path),
    Option("zeopack", None, "zeopack script to wrap; empty: no bin/zeopack "
           "(unset: the recipe's)", "zeopack", R.script),
    Option("zeopack-script-name", "zeopack", "bin/zeopack's name",
           "zeopack_script_name", R.script_name),
    Option("repozo", None, "repozo script to wrap; empty: no bin/repozo "
           "(unset: ZODB's)", "repozo", R.script),
    Option("repozo-script-name", "repozo", "bin/repozo's name",
           "repozo_script_name", R.script_name),
    Option("zeo-conf", None, "a zeo.conf of your own, used instead of the "
           "generated one", "zeo_conf", R.existing_path),
    Option("zeo-address", "8100", "where the server listens", "address",
           R.address, Address),
    Option("monitor-address", None, "where 1.x's statistics text is served",
           "monitor_address", R.optional_address, Address),
    Option("metrics-address", None, "where Prometheus metrics are served",
           "metrics_address", R.optional_address, Address),
    Option("effective-user", None, "the user the server runs as when "
           "started by root", "effective_user", R.user),
    Option("invalidation-queue-size", "100", "invalidations kept for "
           "reconnecting clients", "invalidation_queue_size", integer(0),
           int),
    Option("invalidation-age", None, "seconds invalidations are kept too",
           "invalidation_age", number(0), float),
    Option("transaction-timeout", None, "seconds a commit may hold the "
           "storage lock", "transaction_timeout", integer(1), int),
    Option("read-only", "false", "serve the storage read-only", "read_only",
           R.boolean, bool),
    Option("client-conflict-resolution", "false", "clients resolve "
           "conflicts instead of the server", "client_conflict_resolution",
           R.boolean, bool),
    Option("msgpack", None, "speak msgpack to clients", "msgpack", R.boolean,
           bool),
    Option("zeo-log", "{var}/log/{part}.log", "the server's log file",
           "zeo_log", R.path),
    Option("zeo-log-format", "%(asctime)s %(message)s", "format of log "
           "lines", "zeo_log_format", R.text),
    Option("zeo-log-custom", None, "a log handler section replacing the "
           "log file", "zeo_log_custom", R.raw),
    Option("zeo-log-level", "info", "the log level", "zeo_log_level",
           R.log_level),
    Option("zeo-log-max-size", None, "rotate the log at this size",
           "zeo_log_max_size", R.log_size),
    Option("zeo-log-old-files", None, "rotated logs kept",
           "zeo_log_old_files", integer(0), int),
    Option("storage-number", "1", "the storage's name", "storage_number",
           R.storage_name),
    Option("file-storage", "{var}/filestorage/Data.fs", "the database file",
           "file_storage", R.path),
    Option("blob-storage", None, "the blob directory", "blob_storage",
           R.path),
    Option("socket-name", "{var}/zeo.zdsock", "zdaemon's control socket",
           "socket_name", R.path),
    Option("pid-file", "{var}/{part}.pid", "the server's pid file",
           "pid_file", R.path),
    Option("pack-days", "1", "days of history bin/zeopack keeps",
           "pack_days", number(0), float),
    Option("pack-gc", "true", "garbage-collect when packing", "pack_gc",
           R.boolean, bool),
    Option("pack-keep-old", "true", "keep the pre-pack file as Data.fs.old",
           "pack_keep_old", R.boolean, bool),
    Option("zeo-conf-additional", None, "lines added to the generated "
           "zeo.conf", "zeo_conf_additional", R.raw),
    Option("start-timeout", "30", "seconds start waits for the server",
           "start_timeout", integer(1), int),
    Option("stop-timeout", "30", "seconds the server gets to stop",
           "stop_timeout", integer(1), int),
    Option("systemd-unit", "false", "also write a systemd unit",
           "systemd_unit", R.boolean, bool),
    Option("pack-schedule", None, "when a systemd timer runs bin/zeopack",
           "pack_schedule", R.calendar),
    Option("relative-paths", None, "scripts and zeo.conf follow a moved "
           "buildout", "relative_paths", R.relative_paths),
    Option("eggs", None, "more eggs on the server's path", "eggs", R.lines,
           tuple),
    Option("extra-paths", None, "more directories on the server's path",
           "extra_paths", R.directories, tuple),
    Option("initialization", None, "Python code run first in every script",
           "initialization", R.code),
    Option("ssl-certificate", None, "the server's TLS certificate", tls=True),
    Option("ssl-key", None, "the server's TLS key", tls=True),
    Option("authentication-database", None, "the client certificates (or "
           "CAs) the server trusts", tls=True),
    Option("authentication-realm", None, "accepted for 1.x buildouts; "
           "unused"),
    Option("tls-generate", "false", "make the missing certificates and "
           "keys", tls=True),
    Option("tls-directory", "{var}/tls", "where tls-generate makes them"),
    Option("tls-clients", "zope", "the client certificates tls-generate "
           "makes"),
    Option("pack-ssl-certificate", None, "bin/zeopack's client "
           "certificate", tls=True),
    Option("pack-ssl-key", None, "bin/zeopack's client key", tls=True),
    Option("pack-user", None, "1.x's password authentication; ignored or "
           "refused"),
    Option("pack-password", None, "1.x's password authentication; ignored "
           "or refused"),
    Option("replicate-to", None, "ZRS primary: secondaries connect here",
           "replicate_to", R.optional_address, Address),
    Option("replicate-from", None, "ZRS secondary of the primary there",
           "replicate_from", R.server_address, Address),
    Option("keep-alive-delay", None, "seconds between a secondary's "
           "keep-alives", "keep_alive_delay", integer(0), int),
    Option("upstream-address", None, "fan-out: serve this ZEO server's "
           "storage", "upstream", R.server_address, Address),
    Option("upstream-cache-size", None, "the fan-out's client cache size",
           "upstream_cache_size", R.log_size),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
# The options that make the server speak TLS (see `Reader.tls`).
TLS_OPTIONS = tuple(option.name for option in OPTIONS if option.tls)
DEFAULTS = {option.name: option.default for option in OPTIONS}

# One part's configuration, every value checked and paths absolute: a
# field per option that has one, and those that are not options.
Settings = dataclasses.make_dataclass("Settings", [
    ("part", str), ("buildout_dir", str), ("part_dir", str),
    ("bin_dir", str),
    *((option.field, option.kind) for option in OPTIONS if option.field),
    ("tls", TLS),  # from the TLS options; None: plain ZEO
    # zeo-conf: what the file makes the server use (zeoconf.ServerConf);
    # the fields it decides are taken from it.
    ("server_conf", object, dataclasses.field(default=None)),
], bases=(SettingsBase,), frozen=True)


def read_settings(buildout, name, options, read_zeo_conf):
    """Parse and check every option of part NAME into a `Settings`.
    READ_ZEO_CONF(settings) returns the `zeoconf.ServerConf` of a part
    with zeo-conf: the file decides what the server uses."""
    r = Reader(buildout, name, options)
    r.warn_unknown()
    settings = Settings(
        part=name,
        buildout_dir=r.buildout_dir,
        part_dir=os.path.join(buildout["buildout"]["parts-directory"], name),
        bin_dir=buildout["buildout"]["bin-directory"],
        **{option.field: option.read(r, option.name)
           for option in OPTIONS if option.field},
        tls=r.tls(),
    )
    if settings.zeo_conf:
        settings = following(settings, read_zeo_conf(settings))
    check_pack_password(r, settings)
    check_paths(r, settings)
    check_tls(r, settings)
    check_systemd_unit(r, settings)
    check_scale_out(r, settings)
    return settings


def following(settings, conf):
    """SETTINGS with what the zeo-conf file, read into CONF, decides: the
    address, storages, pid file, control socket and log the server and
    the generated tools use, and the options publish."""
    file_storage = next((s for s in conf.storages if s.path), Storage(None))
    return dataclasses.replace(
        settings, server_conf=conf, address=Address.of(conf.address),
        storage_number=conf.storages[0].name,
        file_storage=file_storage.path, blob_storage=file_storage.blob_dir,
        pid_file=conf.pid_file or settings.pid_file,
        socket_name=conf.socket_name or settings.socket_name,
        zeo_log=conf.logfile or settings.zeo_log)


def authenticates(settings):
    """True if the server accepts only clients with a certificate."""
    return settings.tls is not None or bool(
        settings.server_conf and settings.server_conf.ssl)


def check_pack_password(reader, settings):
    """pack-user/pack-password: 1.x's zeopack sent them only to a server
    that asked, and ZEO 6 cannot check a password at all."""
    given = [option for option in ("pack-user", "pack-password")
             if reader.text(option) is not None]
    if not given:
        return
    pack_certificate = settings.tls and settings.tls.pack_certificate
    if authenticates(settings) and not pack_certificate:
        option = given[0]
        reader.fail(option, shown_value(reader, option), (
            "ZEO 6 has no password authentication; bin/zeopack proves "
            "who it is with a TLS client certificate: set tls-generate "
            "= true (or ssl-certificate, ssl-key, authentication-database"
            " and pack-ssl-certificate, pack-ssl-key) and remove "
            "pack-user and pack-password"))
    if pack_certificate:
        why = ("not used: bin/zeopack authenticates with its client "
               f"certificate {pack_certificate}")
    else:
        why = ("ignored: the server has no authentication (ZEO 6 has none "
               "by password; for authentication by TLS client "
               "certificates, which bin/zeopack gets too, set tls-generate "
               "= true)")
    many = len(given) > 1
    logger.warning(
        "[%s] %s %s %s; remove %s", settings.part,
        " and ".join(f"{option} = {shown_value(reader, option)!r}"
                     for option in given),
        "are" if many else "is", why, "them" if many else "it")


def shown_value(reader, option):
    """The value of OPTION as messages show it: not a password."""
    return "***" if option == "pack-password" else reader.text(option)


def zope2_default(source, zope2_location, script):
    """1.5 used the Zope 2 checkout's ZODBTools scripts by default."""
    if source is None and zope2_location:
        candidate = os.path.join(zope2_location, "utilities", "ZODBTools",
                                 script + ".py")
        if os.path.isfile(candidate):
            return candidate
    return source


def check_paths(reader, settings):
    """Fail now, not at start time, on places the server cannot write,
    and on a file to be where the part makes a directory."""
    made = settings.directories()
    places = [("var", settings.var, True), *settings.places()]
    for option, path, is_directory in places:
        if is_directory:
            if os.path.exists(path) and not os.path.isdir(path):
                reader.fail(option, path, "is not a directory")
            continue
        if os.path.isdir(path):
            reader.fail(option, path, "is a directory; give a file name")
        for other, other_path, directory in made:
            if inside(directory, path):
                reader.fail(option, path, (
                    f"this part makes the directory {directory} there (for "
                    f"{other} = {other_path!r}); give {option} a file name "
                    "of its own"))
    for storage in settings.storages:
        for option, path in (("file-storage", storage.path),
                             ("blob-storage", storage.blob_dir)):
            if path and inside(os.path.normpath(path), settings.part_dir):
                where = ("zeo-conf", settings.zeo_conf) if (
                    settings.zeo_conf) else (option, path)
                reader.fail(*where, (
                    f"the data at {path} would be inside the part's "
                    f"directory {settings.part_dir}, which buildout removes "
                    "when it reinstalls the part; keep data under var/ (an "
                    "absolute path)"))
    for option, path, _ in places:
        if not writable_location(path):
            reader.fail(option, path, "cannot be created or written by this "
                        "user; fix the permissions or choose another path")
    for option, address in settings.addresses().items():
        if address.is_unix and len(address.path) > 100:
            reader.fail(option, address.path, "unix socket paths are "
                        "limited to about 100 characters")
    check_addresses_differ(reader, settings)


WILDCARD_HOSTS = ("0.0.0.0", "::")


def server_names(address):
    """Names clients may reach the server by, for its certificate: the
    listening host (this machine's names when it listens everywhere) and
    the loopback names."""
    if address.host in WILDCARD_HOSTS:
        names = [socket.gethostname(), socket.getfqdn()]
    else:
        names = [address.host]
    names += ["localhost", "127.0.0.1", "::1"]
    return tuple(dict.fromkeys(name for name in names if name))


def check_tls(reader, settings):
    """TLS rules that need the whole settings, then (unless tls-generate
    makes them at install time) the files themselves."""
    if settings.tls is None:
        if settings.zeopack is None and authenticates(settings):
            logger.warning(
                "[%s] zeo-conf = %r configures TLS, which bin/zeopack cannot "
                "use: set zeopack = (empty), or use the options "
                "ssl-certificate, ssl-key and authentication-database "
                "instead of zeo-conf", settings.part, settings.zeo_conf)
        return
    if settings.zeopack:
        logger.warning(
            "[%s] zeopack = %r: that script cannot use TLS, so it cannot "
            "pack this server; remove the option to get the recipe's own "
            "bin/zeopack", settings.part, settings.zeopack)
    if settings.zeopack is None and not settings.tls.pack_certificate:
        reader.fail("pack-ssl-certificate", "", (
            "bin/zeopack needs a client certificate that the server trusts: "
            "set pack-ssl-certificate and pack-ssl-key, or tls-generate = "
            "true; or set zeopack = (empty) for no bin/zeopack"))
    if not settings.tls.generate:
        check_tls_files(settings.part, settings.tls)


def check_tls_files(part, tls_settings):
    """Check certificates, keys and the database before ZEO reads them;
    a problem stops buildout naming the option, a doubt is a warning."""
    from plone.recipe.zope2zeoserver import tls
    for check, files in tls_settings.files():
        try:
            warnings = check()
        except tls.Problem as e:
            option, path = files[e.which]
            raise user_error(part, option, path, e)
        for which, why in warnings:
            option, path = files[which]
            logger.warning("[%s] %s = %r: %s", part, option, path, why)


def check_scale_out(reader, settings):
    """Replication (ZRS) and fan-out: options that contradict each other
    or point the server at itself."""
    options = [option for option, value in (
        ("replicate-to", settings.replicate_to),
        ("replicate-from", settings.replicate_from),
        ("keep-alive-delay", settings.keep_alive_delay),
        ("upstream-address", settings.upstream),
        ("upstream-cache-size", settings.upstream_cache_size))
        if value is not None]
    if settings.zeo_conf and options:
        reader.fail(options[0], reader.text(options[0]), (
            "zeo-conf replaces the generated zeo.conf: configure replication "
            "or the <zeoclient> storage in that file, or remove zeo-conf"))
    if settings.upstream and settings.replicates:
        reader.fail("upstream-address", reader.text("upstream-address"), (
            "a fan-out server serves another server's storage and has none "
            "of its own to replicate: remove replicate-to/replicate-from, "
            "or make this part a secondary (replicate-from) instead"))
    if settings.keep_alive_delay is not None and not settings.replicate_from:
        reader.fail("keep-alive-delay", reader.text("keep-alive-delay"), (
            "only a secondary sends keep-alives: add replicate-from or "
            "remove this option"))
    if settings.upstream_cache_size and not settings.upstream:
        reader.fail("upstream-cache-size", reader.text("upstream-cache-size"),
                    "only a fan-out server (upstream-address) has a client "
                    "cache: add upstream-address or remove this option")
    own = settings.addresses()
    for option, address in (("replicate-from", settings.replicate_from),
                            ("upstream-address", settings.upstream)):
        for other, listening in own.items():
            if address and str(address) == str(listening):
                reader.fail(option, reader.text(option), (
                    f"this part listens there itself ({other}); give the "
                    "address of the other server"))


def check_systemd_unit(reader, settings):
    """The units are named after the part: systemd accepts fewer
    characters in a unit name than buildout in a part name.  The pack
    timer runs bin/zeopack."""
    for option, wanted in (("systemd-unit", settings.systemd_unit),
                           ("pack-schedule", settings.pack_schedule)):
        if wanted and not re.fullmatch(r"[A-Za-z0-9:_.-]+", settings.part):
            reader.fail(option, reader.text(option), (
                f"the part name {settings.part!r} cannot name a systemd "
                "unit (letters, digits, ':', '_', '.', '-'); rename the "
                "part"))
    if settings.pack_schedule and settings.zeopack == "":
        reader.fail("pack-schedule", settings.pack_schedule, (
            "zeopack = (empty) makes no bin/zeopack for the timer to "
            "run: remove that line to get the recipe's bin/zeopack, or "
            "remove pack-schedule"))


def check_addresses_differ(reader, settings):
    """The server, its monitor and its metrics each need an address of
    their own; the second to claim one would fail at start time."""
    taken = {"socket-name": Address(path=settings.socket_name)}
    for option, address in settings.addresses().items():
        for other, used in taken.items():
            if address.is_unix or used.is_unix:
                same = address.path == used.path
            else:
                same = address.port == used.port and (
                    address.host == used.host
                    or {address.host, used.host} & set(WILDCARD_HOSTS))
            if same:
                reader.fail(option, str(address), f"{other} uses this "
                            "address too; give each its own")
        taken[option] = address


def writable_location(path):
    """True if PATH exists and is writable, or its nearest existing
    ancestor directory is.  Below a file nothing can be created."""
    missing = False
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path, missing = parent, True
    if not os.path.isdir(path):
        return not missing and os.access(path, os.W_OK)
    return os.access(path, os.W_OK | os.X_OK)
