"""The buildout recipe: one part becomes a ready-to-run ZEO server."""

import contextlib
import functools
import glob
import hashlib
import logging
import os
import subprocess
import sys
import warnings

import zc.buildout
import zc.buildout.easy_install
from zc.buildout.buildout import bool_option

from plone.recipe.zope2zeoserver import python2
from plone.recipe.zope2zeoserver import replication
from plone.recipe.zope2zeoserver import resolved
from plone.recipe.zope2zeoserver import systemd
from plone.recipe.zope2zeoserver import zeoconf
from plone.recipe.zope2zeoserver.files import user_entry
from plone.recipe.zope2zeoserver.options import TLS_OPTIONS
from plone.recipe.zope2zeoserver.options import WILDCARD_HOSTS
from plone.recipe.zope2zeoserver.options import Address
from plone.recipe.zope2zeoserver.options import check_tls_files
from plone.recipe.zope2zeoserver.options import read_settings
from plone.recipe.zope2zeoserver.options import user_error


logger = logging.getLogger("plone.recipe.zope2zeoserver")

PROJECT = "plone.recipe.zope2zeoserver"

# In parts/<part>/: the scripts' distributions and what decided them.
WORKING_SET_FILE = "working-set.txt"
INPUTS_PREFIX = "# inputs: "

# Parts whose running server `uninstall` stopped during this buildout run;
# when the part is installed again (changed options), it is restarted.
stopped_for_reinstall = set()

# Part -> {option: path} of the data of its previous installation, noted
# by `uninstall`: when the new options point elsewhere, install says where
# the old data stayed.
previous_data = {}


class Recipe:
    """Install a ZEO server part: zeo.conf, bin/<part>, zeopack, repozo."""

    def __init__(self, buildout, name, options):
        self.buildout = buildout
        self.name = name
        self.options = options
        if any(options.get(option) for option in TLS_OPTIONS):
            # Reading TLS options checks certificates with cryptography.
            # Any installed release will do: newest would ask the index
            # on every run.
            activate(resolve(buildout, [PROJECT + "[tls]"], newest=False))
        self.settings = settings = read_settings(buildout, name, options,
                                                 self.server_conf)
        # Publish resolved paths: other parts (collective.recipe.backup)
        # read them to find the data this server really uses.
        options["location"] = settings.part_dir
        options["var"] = settings.var
        if settings.file_storage:
            options["file-storage"] = settings.file_storage
        if settings.blob_storage:
            options["blob-storage"] = settings.blob_storage
        options["socket-name"] = settings.socket_name
        options["pid-file"] = settings.pid_file
        options["zeo-log"] = settings.zeo_log
        options["control-script"] = os.path.join(settings.bin_dir, name)
        # Found here, not in update(): buildout deletes a part's files
        # (leaving its server running) when update() fails, so an egg
        # that cannot be found must stop buildout before anything changes.
        self.changed_working_set = self.find_changed_working_set()

    def server_conf(self, settings):
        """What the zeo-conf file makes the server use, read once per run
        (with ZEO's schema: the installed eggs will do)."""
        self.settings = settings  # the part's eggs, for the next line
        activate(self.installed_working_set)
        return self.read_zeo_conf(zeoconf.server_conf, settings)

    def install(self):
        settings = self.settings
        activate(self.working_set)  # ZEO's schema checks zeo.conf
        make_directories(settings)
        self.make_tls()
        conf_path = settings.zeo_conf_path
        with open(conf_path, "w", encoding="utf-8") as f:
            f.write(zeoconf.zeo_conf_text(settings))
        if settings.server_conf:
            self.check_directories()
        self.write_resolved(self.read_zeo_conf(zeoconf.check, settings,
                                               conf_path))
        self.check_neighbours()
        self.report_moved_data()
        paths = [settings.part_dir] + self.write_scripts()
        systemd.write_units(settings)
        if self.name in stopped_for_reinstall:
            stopped_for_reinstall.discard(self.name)
            start_again(self.name, self.options["control-script"])
        return paths

    def report_moved_data(self):
        """The data options changed: the server starts on new files, and
        the old ones are where they were; say so, or it looks like loss."""
        for option, old in previous_data.pop(self.name, {}).items():
            new = self.options.get(option)
            if old and new != old and os.path.exists(old):
                logger.warning(
                    "[%s] %s is now %s; the data at %s is left as it was: "
                    "to keep using it, stop the server and move it there",
                    self.name, option, new or "unset", old)

    def update(self):
        # Options are unchanged; only data directories may have vanished,
        # and a zeo-conf file may have been edited since.
        make_directories(self.settings)
        self.make_tls()
        if self.settings.server_conf:  # read by __init__, on every run
            self.check_directories()
        found = resolved.read(resolved.path_beside(
            self.settings.zeo_conf_path), self.settings.buildout_dir)
        if found is None:
            # A zeo-conf file edited since: its values are needed.
            self.write_resolved(self.read_zeo_conf(
                zeoconf.check, self.settings, self.settings.zeo_conf_path))
        else:  # resolved.conf names every storage without loading zeo.conf
            self.warn_python2_storages(found.get("storage", []))
        # The eggs may not be (see find_changed_working_set).  Scripts
        # are only rewritten where their text changes.
        if self.changed_working_set is not None:
            self.write_scripts(self.changed_working_set)

    def write_resolved(self, config):
        """parts/<part>/etc/resolved.conf (see resolved.py) from CONFIG,
        the part's zeo.conf as ZConfig read it; and the warning about its
        storages that Python 2 wrote."""
        settings = self.settings

        def spell(path):
            return zeoconf.conf_path(settings, path)

        address = config.zeo.address.address
        items = [("source", spell(settings.zeo_conf_path))]
        if settings.zeo_conf:
            items.append(("source", spell(settings.zeo_conf)))
        items += [
            ("socket-name", spell(config.runner.socket_name)),
            ("pid-file", spell(config.zeo.pid_filename)),
            ("program", spell(config.runner.program[0])),
            ("address", spell(address) if isinstance(address, str)
             else f"{address[0]} {address[1]}")]
        for opener in config.storages:
            role = replication.role(opener)
            if role:
                items.append(("role", f"storage {opener.name}: "
                              f"{replication.role_text(role)}"))
        # Every file storage, zeo-conf-additional's too.
        paths = [path for _, path, _ in
                 replication.file_storages(config.storages)]
        items += [("storage", spell(path)) for path in paths]
        resolved.write(resolved.path_beside(settings.zeo_conf_path), items)
        self.warn_python2_storages(paths)

    def warn_python2_storages(self, paths):
        """A Data.fs that Python 2 wrote is refused by the server until it
        is converted: say so now, with the way out (see python2.py)."""
        for path in paths:
            if path and python2.wrote(path):
                logger.warning(
                    "[%s] %s was written by Python 2: the server refuses it "
                    "until it is converted; stop the Python 2 server that "
                    "uses it, back it up, then run %s", self.name, path,
                    python2.command(self.name))

    def read_zeo_conf(self, read, *args):
        """READ(*ARGS), with ZEO's refusal of the part's zeo.conf turned
        into a one-line UserError naming the options to look at."""
        import ZConfig  # on the path once the part's eggs are active
        try:
            return read(*args)
        except ZConfig.ConfigurationError as e:
            reason = str(e)
        except (KeyError, ValueError, TypeError, OSError) as e:
            # ZConfig lets some datatypes' errors through, e.g. a log
            # format naming an unknown record field, or the ssl module's
            # refusal of a zeo-conf's <ssl> files.
            reason = f"{type(e).__name__}: {e}"
        raise self.zeo_conf_error(reason)

    def check_directories(self):
        """ZEO's check, left out of reading the zeo-conf file, that the
        directories of the file's paths exist; the part made its own."""
        path = zeoconf.missing_directory(self.settings.server_conf)
        if path:
            raise self.zeo_conf_error(
                f"the directory named as part of the path {path} does not "
                "exist")

    def zeo_conf_error(self, reason):
        # One line: ZConfig puts the file position on a line of its own.
        reason = " ".join(reason.split())
        return zc.buildout.UserError(
            f"[{self.name}] ZEO refuses the zeo.conf of this part "
            f"({self.settings.zeo_conf_path}): {reason}; "
            f"check {self.culprit_options()}")

    def make_tls(self):
        """tls-generate: make the missing certificates, keys and client
        database, and say where they are; then check every TLS file, made
        now or not, before ZEO reads it."""
        settings = self.settings
        if settings.tls is None or not settings.tls.generate:
            return
        from plone.recipe.zope2zeoserver import tls  # loads cryptography
        directory = settings.tls.generate
        try:
            made = tls.generate(directory, self.name,
                                settings.tls.server_names,
                                settings.tls.clients, owner=self.tls_owner())
        except tls.Problem as e:
            raise user_error(self.name, "tls-directory", directory, e)
        except OSError as e:
            raise user_error(
                self.name, "tls-directory", directory,
                f"cannot write there: {e.strerror or e}; fix the permissions "
                "or choose another tls-directory")
        if made:
            address = settings.address
            if address.host in WILDCARD_HOSTS:
                # Clients reach a server listening everywhere by a name.
                address = Address(host=settings.tls.server_names[0],
                                  port=address.port)
            logger.info(tls.client_instructions(
                self.name, str(address),
                settings.storage_number, directory, settings.tls.clients,
                settings.tls.server_names))
        check_tls_files(self.name, settings.tls)

    def tls_owner(self):
        """(uid, gid) of effective-user when buildout runs as root: the
        server reads its key after zdaemon switched to that user."""
        if not self.settings.effective_user or os.geteuid() != 0:
            return None
        entry = user_entry(self.settings.effective_user)
        return entry.pw_uid, entry.pw_gid

    def check_neighbours(self):
        """Two servers of one buildout must not share data or sockets (the
        1.x defaults do, for every part but the first)."""
        for part in self.buildout["buildout"]["parts"].split():
            other = self.buildout[part] if part != self.name else None
            if other is None or not other.get("recipe", "").startswith(
                    PROJECT):
                continue
            for option in ("file-storage", "socket-name", "pid-file"):
                value = self.options.get(option)
                if value and value == other.get(option):
                    raise user_error(
                        self.name, option, value, f"part [{part}] uses the "
                        f"same file; give each part its own {option}")

    def culprit_options(self):
        """The options whose text goes into zeo.conf unchecked by us."""
        if self.settings.zeo_conf:
            return f"the file named by zeo-conf ({self.settings.zeo_conf})"
        names = [name for name in ("zeo-conf-additional", "zeo-log-custom",
                                   "zeo-log-format") if name in self.options]
        return " and ".join(names) or "the options of this part"

    # -- scripts ---------------------------------------------------------

    @functools.cached_property
    def working_set(self):
        return self.resolve_eggs()

    @functools.cached_property
    def installed_working_set(self):
        """`working_set` from the eggs installed, never asking the index
        for newer releases: for what every run reads and checks."""
        return self.resolve_eggs(newest=False)

    def resolve_eggs(self, newest=True):
        """The distributions whose locations the generated scripts put on
        sys.path: the recipe's server extra and `eggs`.  A replicated
        storage adds the `zrs` extra (zc.zrs, pinned): as a requirement of
        its own, since "[server,zrs]" resolves its extras in an order that
        changes from run to run (a set), and so would the scripts."""
        requirements = [f"{PROJECT}[server]"]
        if self.settings.replicates:
            requirements.append(f"{PROJECT}[zrs]")
        return resolve(self.buildout, [*requirements, *self.settings.eggs],
                       newest=newest)

    def write_scripts(self, ws=None):
        settings = self.settings
        ws = self.working_set if ws is None else ws
        conf = self.path_expression(settings.zeo_conf_path)
        base = self.path_expression(settings.buildout_dir)
        server_args = f"{conf}, {base}"
        scripts = [
            ("runzeo", os.path.join(settings.part_dir, "bin"),
             "plone.recipe.zope2zeoserver.runzeo", "main",
             server_args + self.listener_arguments()),
            (self.name, settings.bin_dir,
             "plone.recipe.zope2zeoserver.control", "main",
             server_args + self.client_tls_argument()),
        ]
        if settings.zeopack != "":
            scripts.append((settings.zeopack_script_name, settings.bin_dir)
                           + self.zeopack_entry())
        if settings.repozo != "":
            scripts.append((settings.repozo_script_name, settings.bin_dir)
                           + self.repozo_entry())
        paths = []
        with quiet_pkg_resources_import(ws) as prelude:
            for name, dest, module, function, arguments in scripts:
                paths += zc.buildout.easy_install.scripts(
                    [(name, module, function)], ws, sys.executable, dest,
                    extra_paths=self.extra_paths(),
                    arguments=arguments,
                    initialization=prelude + settings.initialization,
                    relative_paths=settings.relative_paths)
        return paths + [self.record_working_set(ws)]

    def find_changed_working_set(self):
        """The scripts' eggs found again if something that decides them
        changed since they were written: a [versions] pin or an egg added
        to the eggs directory changes them, and buildout's signature of
        this part does not cover them (the recipe requires nothing).
        None otherwise (resolving costs ~25 ms), and before the first
        install, which resolves anyway.  What is installed will do:
        newest would read the index page of every egg on every run (46 s
        with zc.buildout 4 and setuptools 65); new releases come with the
        next install of the part."""
        recorded = self.recorded_inputs()
        if recorded is None or recorded == self.working_set_inputs():
            return None
        return self.installed_working_set

    def working_set_inputs(self):
        """A digest of what decides the working set, short of resolving
        it.  Buildout develops develop eggs again on every run, so their
        entries' times change and a buildout with develop eggs always
        resolves."""
        options = self.buildout["buildout"]
        develop = options["develop-eggs-directory"]
        try:
            changed = [os.stat(options["eggs-directory"]).st_mtime_ns,
                       os.stat(develop).st_mtime_ns]
            changed += sorted((entry.name, entry.stat().st_mtime_ns)
                              for entry in os.scandir(develop))
        except OSError:  # resolving would fail and say why
            changed = None
        # Not `offline`: from what is installed, it finds the same.
        inputs = (sys.executable, self.settings.replicates,
                  self.settings.eggs, changed,
                  sorted(zc.buildout.easy_install.default_versions().items()),
                  *(options.get(name) for name in (
                      "find-links", "index", "allow-hosts",
                      "allow-unknown-extras", "prefer-final")))
        return hashlib.sha1(repr(inputs).encode()).hexdigest()

    def record_working_set(self, ws):
        """parts/<part>/working-set.txt: the distributions the scripts
        run with, for people, and the inputs they were resolved from."""
        path = os.path.join(self.settings.part_dir, WORKING_SET_FILE)
        lines = [f"# The distributions on the sys.path of {self.name}'s "
                 "scripts, as bin/buildout found them.",
                 f"{INPUTS_PREFIX}{self.working_set_inputs()}"]
        lines += [f"{dist.project_name} {dist.version} {dist.location}"
                  for dist in ws]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def recorded_inputs(self):
        path = os.path.join(self.settings.part_dir, WORKING_SET_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.startswith(INPUTS_PREFIX):
                        return line[len(INPUTS_PREFIX):].strip()
        except OSError:
            pass
        return None

    def zeopack_entry(self):
        """bin/zeopack packs the first storage of the server's zeo.conf
        at its address (the options', or the zeo-conf file's)."""
        settings = self.settings
        address = settings.address
        storage = settings.storages[0]
        if settings.zeopack:
            if address.is_unix:
                where = ["-U", address.path]
            else:
                where = ["-h", address.host, "-p", str(address.port)]
            defaults = where + ["-S", storage.name,
                                "-d", f"{settings.pack_days:g}"]
            if storage.blob_dir:
                defaults += ["-B", storage.blob_dir]
            return ("plone.recipe.zope2zeoserver.pack", "run_script",
                    f"{settings.zeopack!r}, {defaults!r}")
        target = self.address_expression(address)
        defaults = {"storage": storage.name, "days": settings.pack_days}
        return ("plone.recipe.zope2zeoserver.pack", "main",
                f"{target}, {defaults!r}" + self.client_tls_argument())

    def client_tls_argument(self):
        """The client pair of bin/zeopack and the control script's stats
        and check, and the server certificate they trust (pinned: exactly
        the part's own server)."""
        settings = self.settings.tls
        if settings is None or not settings.pack_certificate:
            return ""
        files = {"certificate": settings.pack_certificate,
                 "key": settings.pack_key,
                 "server_certificate": settings.certificate}
        return ", tls={%s}" % ", ".join(
            f"{name!r}: {self.path_expression(path)}"
            for name, path in files.items())

    def listener_arguments(self):
        """runzeo's keyword arguments for the monitor and metrics
        addresses: ZEO 6's zeo.conf schema has no place for them."""
        return "".join(
            f", {keyword}={self.address_expression(address)}"
            for keyword, address in (
                ("monitor_address", self.settings.monitor_address),
                ("metrics_address", self.settings.metrics_address))
            if address)

    def address_expression(self, address):
        """Python source for ADDRESS in a generated script."""
        if address.is_unix:
            return self.path_expression(address.path)
        return repr((address.host, address.port))

    def repozo_entry(self):
        if self.settings.repozo:
            return ("plone.recipe.zope2zeoserver.pack", "run_script",
                    repr(self.settings.repozo))
        return ("plone.recipe.zope2zeoserver.backup", "repozo_main", "")

    def extra_paths(self):
        paths = list(self.settings.extra_paths)
        if self.settings.zope2_location:
            paths.append(os.path.join(self.settings.zope2_location, "lib",
                                      "python"))
        return paths

    def path_expression(self, path):
        """Python source for PATH in a generated script: relative to the
        script's location (`base`) when the buildout uses relative paths."""
        base = self.settings.relative_paths
        if base and path == base:
            return "base"
        if base and path.startswith(base + os.sep):
            return f"join(base, {os.path.relpath(path, base)!r})"
        return repr(path)


# What zc.buildout 4 puts first in a script whose working set holds a
# pkg_resources-style namespace package (zc.zrs, zc.lockfile < 4): the
# import gathers every egg's part of the namespace.  Quietly: setuptools
# 67.5+ warns on stderr at each import, so at every command.
QUIET_PKG_RESOURCES = """\
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pkg_resources
"""


@contextlib.contextmanager
def quiet_pkg_resources_import(ws):
    """The code that imports pkg_resources quietly where zc.buildout 4
    would import it in scripts of WS, and stops it doing so meanwhile;
    "" otherwise (zc.buildout 5 and 6 never import it)."""
    switch = getattr(zc.buildout.easy_install, "import_pkg_resources", None)
    if switch is None or not switch() or not any(
            map(declares_namespaces, ws)):
        yield ""
        return
    switch(False)
    try:
        yield QUIET_PKG_RESOURCES
    finally:
        switch(True)


def declares_namespaces(dist):
    try:
        return bool(dist.get_metadata("namespace_packages.txt"))
    except Exception:  # as zc.buildout 4 does: no such file, unreadable
        return False


def resolve(buildout, requirements, newest=True):
    """The working set of REQUIREMENTS, found the way zc.recipe.egg finds a
    part's eggs: in buildout's eggs and develop-eggs directories, else
    from find-links and the index (unless offline), honouring newest
    (unless NEWEST is false), allow-hosts, allow-unknown-extras and the
    [versions] pins."""
    options = buildout["buildout"]
    eggs = options["eggs-directory"]
    develop = options["develop-eggs-directory"]
    if options.get("offline") == "true":
        # Without a destination zc.buildout looks for X.egg directories
        # in EGGS only, and misses those made from wheels (X.egg/ holding
        # a .dist-info): each of those is a place to look, too.
        made_from_wheels = {os.path.dirname(path) for path in glob.glob(
            os.path.join(eggs, "*", "*.dist-info"))}
        ws = zc.buildout.easy_install.install(
            requirements, None,
            path=[develop, eggs, *sorted(made_from_wheels)])
    else:
        ws = zc.buildout.easy_install.install(
            requirements, eggs, links=options["find-links"].split(),
            index=options.get("index"), path=[develop],
            newest=newest and options.get("newest") == "true",
            allow_hosts=tuple(host.strip() for host in
                              options["allow-hosts"].split("\n")
                              if host.strip()),
            allow_unknown_extras=bool_option(options, "allow-unknown-extras"))
    return zc.buildout.easy_install.sort_working_set(ws, eggs, develop)


def activate(ws):
    """Make the distributions of WS importable in this buildout process,
    the way zc.buildout makes a recipe's own requirements importable:
    checking zeo.conf needs ZConfig and ZEO, checking TLS files
    cryptography.  Distributions already active are left as they are."""
    with warnings.catch_warnings():
        # pkg_resources mistakes a namespace package that zc.buildout
        # imported (zc) for a conflict when zc.lockfile's egg joins it.
        warnings.filterwarnings("ignore", "Module .* was already imported",
                                UserWarning)
        for dist in ws:
            zc.buildout.easy_install.pkg_resources.working_set.add(dist)


def make_directories(settings):
    """Create what the server writes to, and parts/<part>/var for the
    ZEO client caches of Zope instances (1.x made it).  Existing ones are
    left alone: the recipe never removes or empties anything there."""
    def do(option, path, what, action):
        try:
            action()
        except OSError as e:  # e.g. NFS's root_squash, or under /proc
            raise user_error(
                settings.part, option, path,
                f"cannot {what} {e.filename or path}: {e.strerror or e}; "
                "fix the permissions or choose another path")

    for option, path, directory in settings.directories():
        do(option, path, "create directory",
           lambda: os.makedirs(directory, exist_ok=True))
    for option, path, is_directory in settings.places():
        if is_directory:
            # ZODB warns about blob directories others can read.
            do(option, path, "chmod 700",
               lambda: os.chmod(path, 0o700))


def start_again(name, control_script):
    result = subprocess.run([control_script, "start"], capture_output=True,
                            text=True, timeout=600)
    if result.returncode:
        logger.error("[%s] the server was running before this change and "
                     "did not start again: %s", name,
                     (result.stderr or result.stdout).strip())
    else:
        logger.info("[%s] server started again with the new configuration",
                    name)


def uninstall(name, options):
    """Stop the part's server before buildout removes its files, so no
    server is left running from a configuration that no longer exists.
    Data, blobs and logs under var/ are never touched."""
    previous_data[name] = {option: options.get(option)
                           for option in ("file-storage", "blob-storage")}
    control_script = options.get("control-script")
    if not control_script or not os.path.exists(control_script):
        return
    status = subprocess.run([control_script, "status"], capture_output=True,
                            timeout=60)
    if status.returncode != 0:
        return
    logger.info("[%s] stopping the running server before reinstalling or "
                "removing the part", name)
    result = subprocess.run([control_script, "stop"], capture_output=True,
                            text=True, timeout=600)
    if result.returncode:
        raise zc.buildout.UserError(
            f"[{name}] could not stop the running server: "
            f"{(result.stderr or result.stdout).strip()}; stop it with "
            f"{control_script} stop and rerun bin/buildout")
    stopped_for_reinstall.add(name)
