"""The eggs of a part's scripts: found the way zc.recipe.egg finds a
part's eggs, made importable in buildout for the checks that need them,
and recorded in parts/<part>/working-set.txt with what decided them."""

import functools
import glob
import hashlib
import os
import sys
import warnings

import zc.buildout.easy_install
from zc.buildout.buildout import bool_option

PROJECT = "plone.recipe.zope2zeoserver"

# In parts/<part>/: the scripts' distributions and what decided them.
WORKING_SET_FILE = "working-set.txt"
INPUTS_PREFIX = "# inputs: "


class Eggs:
    """The working set of a part's scripts (SETTINGS: its eggs, whether
    it replicates, its directory), resolved at most once per run."""

    def __init__(self, buildout, settings):
        self.buildout = buildout
        self.settings = settings

    @functools.cached_property
    def working_set(self):
        return self.resolve()

    @functools.cached_property
    def installed_working_set(self):
        """`working_set` from the eggs installed, never asking the index
        for newer releases: for what every run reads and checks."""
        return self.resolve(newest=False)

    def resolve(self, newest=True):
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

    def changed(self):
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
        if recorded is None or recorded == self.inputs():
            return None
        return self.installed_working_set

    def inputs(self):
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

    def record(self, ws):
        """parts/<part>/working-set.txt: the distributions the scripts
        run with, for people, and the inputs they were resolved from."""
        path = os.path.join(self.settings.part_dir, WORKING_SET_FILE)
        lines = [f"# The distributions on the sys.path of {self.settings.part}'s "
                 "scripts, as bin/buildout found them.",
                 f"{INPUTS_PREFIX}{self.inputs()}"]
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
