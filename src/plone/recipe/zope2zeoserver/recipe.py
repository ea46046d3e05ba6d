"""The buildout recipe: one part becomes a ready-to-run ZEO server."""

import logging
import os
import subprocess

import zc.buildout

from plone.recipe.zope2zeoserver import python2
from plone.recipe.zope2zeoserver import resolved
from plone.recipe.zope2zeoserver import zeoconf
from plone.recipe.zope2zeoserver.eggs import PROJECT
from plone.recipe.zope2zeoserver.eggs import Eggs
from plone.recipe.zope2zeoserver.eggs import activate
from plone.recipe.zope2zeoserver.eggs import resolve
from plone.recipe.zope2zeoserver.files import blob_loss
from plone.recipe.zope2zeoserver.files import user_entry
from plone.recipe.zope2zeoserver.options import TLS_OPTIONS
from plone.recipe.zope2zeoserver.options import WILDCARD_HOSTS
from plone.recipe.zope2zeoserver.options import Address
from plone.recipe.zope2zeoserver.options import check_tls_files
from plone.recipe.zope2zeoserver.options import read_settings
from plone.recipe.zope2zeoserver.options import user_error


logger = logging.getLogger("plone.recipe.zope2zeoserver")

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
        self.eggs = None  # made by server_conf for a zeo-conf file
        self.settings = settings = read_settings(buildout, name, options,
                                                 self.server_conf)
        self.eggs = self.eggs or Eggs(buildout, settings)
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
        self.changed_working_set = self.eggs.changed()

    def server_conf(self, settings):
        """What the zeo-conf file makes the server use, read once per run
        (with ZEO's schema: the installed eggs will do)."""
        self.settings = settings  # for read_zeo_conf's errors
        self.eggs = Eggs(self.buildout, settings)
        activate(self.eggs.installed_working_set)
        return self.read_zeo_conf(zeoconf.server_conf, settings)

    def install(self):
        settings = self.settings
        activate(self.eggs.working_set)  # ZEO's schema checks zeo.conf
        make_directories(settings)
        self.make_tls()
        conf_path = settings.zeo_conf_path
        with open(conf_path, "w", encoding="utf-8") as f:
            f.write(zeoconf.zeo_conf_text(settings))
        if settings.server_conf:
            self.check_directories()
        # Loaded the way the control script will.
        self.write_resolved(self.read_zeo_conf(
            resolved.load_zeo_conf, conf_path, settings.buildout_dir))
        self.check_neighbours()
        self.report_moved_data()
        paths = [settings.part_dir] + self.write_scripts(
            self.eggs.working_set)
        from plone.recipe.zope2zeoserver import systemd  # install only
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
        found, fresh = resolved.read(resolved.path_beside(
            self.settings.zeo_conf_path), self.settings.buildout_dir)
        if not fresh:
            # A zeo-conf file edited since: its values are needed.
            self.write_resolved(self.read_zeo_conf(
                resolved.load_zeo_conf, self.settings.zeo_conf_path,
                self.settings.buildout_dir))
        else:  # resolved.conf names every file without loading zeo.conf
            self.warn_about_storages(resolved.Resolved(found))
        # The eggs may not be (see Eggs.changed).  Scripts
        # are only rewritten where their text changes.
        if self.changed_working_set is not None:
            self.write_scripts(self.changed_working_set)

    def write_resolved(self, config):
        """parts/<part>/etc/resolved.conf (see resolved.py) from CONFIG,
        the part's zeo.conf as ZConfig read it, and the options that are
        no part of it; and the warnings about its storages."""
        settings = self.settings

        def spell(path):
            return zeoconf.conf_path(settings, path)

        items = [("source", spell(settings.zeo_conf_path))]
        if settings.zeo_conf:
            items.append(("source", spell(settings.zeo_conf)))
        items += resolved.zeo_conf_items(config, spell)
        items.append(("pack-days", f"{settings.pack_days:g}"))
        tls = settings.tls
        if tls is not None and tls.pack_certificate:
            items += [("client-certificate", spell(tls.pack_certificate)),
                      ("client-key", spell(tls.pack_key)),
                      ("server-certificate", spell(tls.certificate))]
        resolved.write(resolved.path_beside(settings.zeo_conf_path), items)
        # Read back as the tools will read it.
        self.warn_about_storages(resolved.load(settings.zeo_conf_path,
                                               settings.buildout_dir))

    def warn_about_storages(self, conf):
        """What the server will refuse in the storages of CONF (a
        `resolved.Resolved`), said now with the way out: a Data.fs that
        Python 2 wrote (python2.py), blobs without their Data.fs."""
        for name, path in conf.files.items():
            if python2.wrote(path):
                logger.warning(
                    "[%s] %s was written by Python 2: the server refuses it "
                    "until it is converted; stop the Python 2 server that "
                    "uses it, back it up, then run %s", self.name, path,
                    python2.command(self.name))
            reason = blob_loss(path, conf.blob_dirs.get(name))
            if reason:
                logger.warning("[%s] storage %s: %s; the server refuses to "
                               "start until then", self.name, name, reason)

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

    def write_scripts(self, ws):
        """The scripts with WS on their path, and the record of WS."""
        # Here: a rerun that changes nothing writes no script.
        from plone.recipe.zope2zeoserver.scripts import Scripts
        return Scripts(self.settings).write(ws) + [self.eggs.record(ws)]

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
