"""The generated scripts: bin/<part>, bin/zeopack, bin/repozo and
parts/<part>/bin/runzeo, made with zc.buildout's script maker.  They are
given the paths of zeo.conf and the buildout; the tools read the rest
from the part's resolved.conf."""

import contextlib
import os
import sys

import zc.buildout.easy_install


class Scripts:
    """The scripts of the part of SETTINGS."""

    def __init__(self, settings):
        self.settings = settings

    def write(self, ws):
        """Write the scripts, with the distributions of WS on their path;
        returns their paths."""
        settings = self.settings
        conf = self.path_expression(settings.zeo_conf_path)
        base = self.path_expression(settings.buildout_dir)
        server_args = f"{conf}, {base}"
        scripts = [
            ("runzeo", os.path.join(settings.part_dir, "bin"),
             "plone.recipe.zope2zeoserver.runzeo", "main",
             server_args + self.listener_arguments()),
            (settings.part, settings.bin_dir,
             "plone.recipe.zope2zeoserver.control", "main", server_args),
        ]
        # The tools read the rest from resolved.conf (Recipe.write_resolved).
        if settings.zeopack != "":
            scripts.append(
                (settings.zeopack_script_name, settings.bin_dir,
                 "plone.recipe.zope2zeoserver.pack", "main",
                 server_args + external(settings.zeopack)))
        if settings.repozo != "":
            scripts.append(
                (settings.repozo_script_name, settings.bin_dir,
                 "plone.recipe.zope2zeoserver.backup", "repozo_main",
                 server_args + external(settings.repozo)))
        paths = []
        with quiet_pkg_resources_import(ws) as prelude:
            for name, dest, module, function, arguments in scripts:
                paths += zc.buildout.easy_install.scripts(
                    [(name, module, function)], ws, sys.executable, dest,
                    extra_paths=self.extra_paths(),
                    arguments=arguments,
                    initialization=prelude + settings.initialization,
                    relative_paths=settings.relative_paths)
        return paths

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


def external(script):
    """The keyword argument naming a 1.x-style script (zeopack, repozo
    options) that bin/zeopack or bin/repozo runs instead of ours."""
    return f", script={script!r}" if script else ""



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
