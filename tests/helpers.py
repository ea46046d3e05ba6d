"""What the tests share besides fixtures (conftest.py): a buildout
driven like a user would, real ZEO clients, waiting with a bound, other
users and file systems of their own."""

import contextlib
import importlib.metadata
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import ZODB
from packaging.requirements import Requirement


ROOT = Path(__file__).resolve().parents[1]
SITE_PACKAGES = str(Path(ZODB.__file__).parents[1])


def buildout_command(dist_dir):
    return dist_dir.parent / "buildout-venv" / "bin" / "buildout"


def buildout_venv(venv):
    """A venv that imports zc.buildout and what it requires, and nothing
    else, like a user's: the recipe's dependencies (ZEO, ZConfig,
    cryptography) reach the buildout process only through the recipe.
    Its site-packages links to this environment's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                    str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    for top in {entry for name in closure("zc.buildout")
                for entry in top_entries(name)}:
        (site / top).parent.mkdir(parents=True, exist_ok=True)
        (site / top).symlink_to(Path(SITE_PACKAGES, top))
    script = venv / "bin" / "buildout"
    script.write_text(f"#!{venv}/bin/python\n"
                      "import sys\n"
                      "from zc.buildout.buildout import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)


def closure(name):
    """NAME and the distributions it requires, recursively (no extras)."""
    names, todo = set(), [name]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        if dist.metadata["Name"] in names:
            continue
        names.add(dist.metadata["Name"])
        for line in dist.requires or ():
            requirement = Requirement(line)
            if (requirement.marker is None
                    or requirement.marker.evaluate({"extra": ""})):
                todo.append(requirement.name)
    return names


def top_entries(name):
    """The entries of site-packages that distribution NAME installed; in
    the `zc` namespace, its own package inside it."""
    entries = set()
    for path in importlib.metadata.distribution(name).files:
        if path.parts[0] == "..":  # bin/ scripts
            continue
        depth = 2 if path.parts[0] == "zc" and len(path.parts) > 2 else 1
        entries.add(str(Path(*path.parts[:depth])))
    return entries


def accepts(address):
    """True if something accepts a connection on ADDRESS ((host, port) or
    a unix socket path) right now; checked apart from the code under
    test (ctl.can_connect)."""
    family = socket.AF_UNIX if isinstance(address, str) else (
        socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    with socket.socket(family) as s:
        s.settimeout(1)
        try:
            s.connect(address)
        except OSError:
            return False
    return True


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Buildout:
    """A buildout directory using the recipe, driven like a user would."""

    def __init__(self, directory, dist_dir, eggs_dir):
        self.dir = Path(directory)
        self.dist_dir = dist_dir
        self.eggs_dir = eggs_dir
        self.port = free_port()

    def write(self, part_options="", part="zeo", extra="", parts=None,
              buildout_options=""):
        """Write buildout.cfg with one recipe part PART.

        PART_OPTIONS are lines for the part (zeo-address defaults to a free
        port), EXTRA is appended verbatim (more parts), BUILDOUT_OPTIONS go
        into [buildout].
        """
        part_options = textwrap.dedent(part_options).strip()
        if "zeo-address" not in part_options:
            part_options = f"zeo-address = {self.port}\n" + part_options
        config = textwrap.dedent(f"""\
            [buildout]
            parts = {parts or part}
            find-links = {self.dist_dir}
            index = file://{self.dist_dir}/
            eggs-directory = {self.eggs_dir}
            newest = false
            """) + textwrap.dedent(buildout_options).strip() + textwrap.dedent(f"""

            [{part}]
            recipe = plone.recipe.zope2zeoserver
            """) + part_options + "\n" + textwrap.dedent(extra)
        (self.dir / "buildout.cfg").write_text(config)
        # Where buildout finds the recipe's dependencies without network:
        # this environment's site-packages, as a develop egg link (the
        # buildout process itself cannot import them, see buildout_venv).
        develop = self.dir / "develop-eggs"
        develop.mkdir(exist_ok=True)
        (develop / "site-packages.egg-link").write_text(SITE_PACKAGES + "\n")
        return config

    def run(self, *args, check=True, timeout=300):
        """Run bin/buildout; CHECK asserts it succeeded."""
        result = subprocess.run(
            [str(buildout_command(self.dist_dir)), "-c", "buildout.cfg",
             *args], cwd=self.dir,
            capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def install(self, part_options="", **kw):
        """write() and run() in one step."""
        self.write(part_options, **kw)
        return self.run()

    def script(self, name, *args, timeout=120, env=None, input=None):
        """Run bin/NAME (or a path relative to the buildout) with ARGS."""
        path = self.dir / name if "/" in name else self.dir / "bin" / name
        return subprocess.run(
            [str(path), *args], cwd=self.dir, capture_output=True, text=True,
            timeout=timeout, env=env, input=input)

    def ctl(self, *args, part="zeo", **kw):
        return self.script(part, *args, **kw)

    def path(self, *parts):
        return self.dir.joinpath(*parts)

    def zeo_conf(self, part="zeo"):
        return self.path("parts", part, "etc", "zeo.conf").read_text()

    def stop_all(self):
        """Stop every server of this buildout: politely, then by force."""
        for script in self.dir.glob("bin/*"):
            if script.name not in ("buildout", "zeopack", "repozo"):
                with contextlib.suppress(Exception):
                    self.script(str(script.relative_to(self.dir)), "stop",
                                timeout=60)
        for pid in processes_using(self.dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def processes_using(directory):
    """Pids of processes whose command line mentions DIRECTORY."""
    marker = str(directory).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def new_buildout(directory, dist_dir, eggs_dir):
    """A Buildout in the new DIRECTORY; its servers are stopped on leaving."""
    directory.mkdir()
    b = Buildout(directory, dist_dir, eggs_dir)
    try:
        yield b
    finally:
        b.stop_all()


def output(result):
    """Everything a command printed."""
    return result.stdout + result.stderr


def imports(buildout, name, *args, timeout=120):
    """Run bin/NAME with ARGS under `python -X importtime`: (the result,
    its stderr without the import lines, the names of the modules it
    imported)."""
    script = buildout.path("bin", name)
    python = script.read_text().splitlines()[0][2:].strip()
    return importtime(python, script, args, buildout.dir, timeout)


def importtime(python, script, args, cwd, timeout):
    """`imports` for any SCRIPT that PYTHON runs."""
    result = subprocess.run(
        [str(python), "-X", "importtime", str(script), *args], cwd=cwd,
        capture_output=True, text=True, timeout=timeout)
    modules, errors = set(), []
    for line in result.stderr.splitlines(keepends=True):
        if line.startswith("import time:"):
            modules.add(line.rpartition("|")[2].strip())
        else:
            errors.append(line)
    return result, "".join(errors), modules


def resolved_conf(buildout, part="zeo"):
    """The part's parts/<part>/etc/resolved.conf as the run-time tools
    read it (`resolved.load`, from the checkout's src/)."""
    sys.path.insert(0, str(ROOT / "src"))
    from plone.recipe.zope2zeoserver import resolved
    return resolved.load(str(buildout.path("parts", part, "etc", "zeo.conf")),
                         str(buildout.dir))


def start(buildout, part="zeo"):
    """bin/<part> start, which must succeed."""
    result = buildout.ctl("start", part=part)
    assert result.returncode == 0, output(result)
    return result


def server_pid(buildout, part="zeo"):
    """The pid in the pid file of BUILDOUT's server."""
    return int(buildout.path("var", f"{part}.pid").read_text())


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition, timeout=10, interval=0.05):
    """Poll CONDITION until it is true or TIMEOUT seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


@contextlib.contextmanager
def client(address, **kw):
    """A real ZEO client database connected to ADDRESS."""
    import ZEO
    kw.setdefault("wait_timeout", 10)
    db = ZEO.DB(address, **kw)
    try:
        yield db
    finally:
        db.close()


def commit(address, **values):
    """Commit VALUES into the root mapping of the server at ADDRESS."""
    with client(address) as db:
        with db.transaction() as conn:
            conn.root().update(values)


def read(address, key):
    with client(address) as db:
        with db.transaction() as conn:
            return conn.root().get(key)


@contextlib.contextmanager
def commit_lock_held(address):
    """A client between tpc_vote and tpc_finish: the server holds the
    storage's commit lock for it until it aborts, on leaving."""
    from ZEO.ClientStorage import ClientStorage
    from ZODB.Connection import TransactionMetaData
    from ZODB.utils import z64
    storage = ClientStorage(address, wait_timeout=10)
    txn = TransactionMetaData()
    try:
        storage.tpc_begin(txn)
        storage.store(storage.new_oid(), z64, b"data", "", txn)
        storage.tpc_vote(txn)
        yield
    finally:
        storage.tpc_abort(txn)
        storage.close()


# -- running the server as another user ------------------------------------

needs_other_users = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd")
    or not shutil.which("runuser"), reason="needs root, useradd and runuser")


@contextlib.contextmanager
def system_user():
    name = f"zeotest{random.randrange(10**6)}"
    subprocess.run(["useradd", "--system", "--no-create-home", name],
                   check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@contextlib.contextmanager
def another_users_buildout(dist_dir):
    """(buildout, user, python) for effective-user tests: a Buildout in a
    new directory every user may reach (pytest's are private to root),
    a new system user, and a Python that user may run (the test is
    skipped without one).  Afterwards its servers are stopped and the
    directory removed."""
    directory = Path(tempfile.mkdtemp(prefix="zeo-user-"))
    directory.chmod(0o755)
    buildout = Buildout(directory / "buildout", dist_dir, directory / "eggs")
    buildout.dir.mkdir()
    buildout.eggs_dir.mkdir()
    try:
        with system_user() as user:
            python = interpreter_for(user.pw_name)
            if python is None:
                pytest.skip(f"no Python that user {user.pw_name} may run")
            yield buildout, user, python
    finally:
        buildout.stop_all()
        shutil.rmtree(directory, ignore_errors=True)


def interpreter_for(user):
    """A Python USER can run that imports this environment's packages
    (the scripts name site-packages on their sys.path): this one, or
    the system's Python of the same version when this one is private
    (e.g. under /root)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    probe = (f"import sys; sys.path[0:0] = [{SITE_PACKAGES!r}]; "
             "import ZEO, zdaemon, ZODB")
    for python in (sys.executable, f"/usr/bin/python{version}"):
        result = subprocess.run(
            ["runuser", "-u", user, "--", python, "-c", probe],
            capture_output=True, cwd="/")
        if result.returncode == 0:
            return python
    return None


def use_interpreter(buildout, python):
    """Point the generated scripts' #! line at PYTHON."""
    for script in (buildout.path("bin", "zeo"),
                   buildout.path("parts", "zeo", "bin", "runzeo")):
        lines = script.read_text().splitlines(keepends=True)
        assert lines[0].startswith("#!")
        script.write_text(f"#!{python}\n" + "".join(lines[1:]))


# -- conflict resolution on the server ------------------------------------

COUNTER = '''\
import persistent


class Counter(persistent.Persistent):
    """Concurrent increments never conflict: the server adds them up.
    `resolutions` counts how often it did."""

    def __init__(self):
        self.value = 0
        self.resolutions = 0

    def add(self, delta):
        self.value += delta

    def _p_resolveConflict(self, old, committed, new):
        resolved = dict(new)
        resolved["value"] = (committed["value"] + new["value"]
                             - old["value"])
        resolved["resolutions"] = max(committed["resolutions"],
                                      new["resolutions"]) + 1
        return resolved
'''


def counter_egg(buildout):
    """A develop egg holding the Counter class, under a module name of its
    own per run: the server can only import it from the egg."""
    module = f"zeotestcounter{random.randrange(10**6)}"
    egg = buildout.path("src", "counter")
    egg.mkdir(parents=True)
    (egg / f"{module}.py").write_text(COUNTER)
    (egg / "setup.py").write_text(textwrap.dedent(f"""\
        from setuptools import setup
        setup(name={module!r}, version="1.0", py_modules=[{module!r}])
        """))
    return module, egg


# -- file systems of their own ----------------------------------------------

@contextlib.contextmanager
def mounted_tmpfs(directory, options):
    """A tmpfs on DIRECTORY (created), unmounted afterwards; the test is
    skipped where mounting is not allowed."""
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs",
                             str(directory)], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)],
                          capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(directory)],
                           capture_output=True)
