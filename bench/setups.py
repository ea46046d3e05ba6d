"""The three ways of running the same ZEO server that the benchmark compares.

- ``Buildout`` with this checkout's recipe: the checkout's wheel (built as
  tests/conftest.py builds it) in a local index, beside the wheels of its
  dependencies.
- ``Buildout`` with plone.recipe.zeoserver, the reference: the same
  buildout.cfg with the newest release and its dependencies' wheels.
- ``PlainZEO``: ZEO's own ``runzeo -a 127.0.0.1:PORT -f Data.fs``, from a
  venv with the same ZEO wheels, no buildout.

Both buildouts run the zc.buildout of one venv holding only zc.buildout,
as the README's quick start makes it, and install their eggs from wheels
into one eggs directory, offline.  Wheels and venvs come from the package
index once and are kept in the cache directory.  Every server runs on a
free port of 127.0.0.1, every wait is bounded, and ``cleanup()`` stops
whatever a setup started.
"""

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds any one command may take
WAIT = 60  # seconds any server may take to come up or go away
POLL = 0.005  # seconds between checks while timing a start or a stop
REFERENCE = "plone.recipe.zeoserver"
PACK = """\
import sys, time, ZEO.ClientStorage
cs = ZEO.ClientStorage.ClientStorage(
    ("127.0.0.1", int(sys.argv[1])), wait=False, read_only=True)
deadline = time.monotonic() + 30
while not cs.is_connected() and time.monotonic() < deadline:
    time.sleep(0.01)
cs.pack(time.time(), wait=True)
cs.close()
"""
PYTHON = f"py{sys.version_info[0]}.{sys.version_info[1]}"


def run(command, timeout=TIMEOUT, **kw):
    """Run COMMAND; fail with its output when it fails."""
    result = subprocess.run([str(c) for c in command], capture_output=True,
                            text=True, timeout=timeout, **kw)
    if result.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} exited "
                           f"{result.returncode}:\n{result.stdout}"
                           f"{result.stderr}")
    return result


def timed(command, **kw):
    """Seconds COMMAND took to run to completion."""
    started = time.perf_counter()
    run(command, **kw)
    return time.perf_counter() - started


# -- what the setups are made of -------------------------------------------

def cached(cache_dir, kind, key, make):
    """CACHE_DIR/KIND-KEY, made by MAKE(directory) unless it was made.

    A half-made one (no marker file) is made again; other KEYs of the same
    KIND are removed.
    """
    path = Path(cache_dir) / f"{kind}-{key}"
    marker = path / ".complete"
    if not marker.exists():
        for old in Path(cache_dir).glob(f"{kind}-*"):
            shutil.rmtree(old)
        make(path)
        marker.touch()
    return path


def make_venv(path, *requirements, pip_args=()):
    run([sys.executable, "-m", "venv", path])
    run([path / "bin" / "python", "-m", "pip", "install", "--quiet",
         *pip_args, *requirements])


def download(dest, requirement):
    """Wheels of REQUIREMENT and everything it depends on, into DEST."""
    run([sys.executable, "-m", "pip", "download", "--quiet",
         "--only-binary", ":all:", "--dest", dest, requirement])


def build_wheel(dist_dir, checkout=ROOT):
    """The wheel of CHECKOUT (this one), as tests/conftest.py builds it."""
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--no-build-isolation", "--wheel-dir", dist_dir, checkout])
    return next(Path(dist_dir).glob("*.whl"))


def requirements(wheel):
    """The Requires-Dist lines of WHEEL that a part installs: its own and
    its `server` extra's."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist()
                    if n.endswith(".dist-info/METADATA"))
        metadata = z.read(name).decode()
    return sorted(line.split(":", 1)[1].strip()
                  for line in metadata.splitlines()
                  if line.startswith("Requires-Dist:")
                  and ("extra ==" not in line
                       or 'extra == "server"' in line))


def dependency_wheels(cache_dir, wheel):
    """A directory with the wheels of WHEEL's dependencies (not WHEEL),
    downloaded once per set of requirements."""
    def make(dest):
        download(dest, f"{wheel}[server]")
        (dest / wheel.name).unlink()
    key = hashlib.sha1(repr(requirements(wheel)).encode()).hexdigest()[:12]
    return cached(cache_dir, f"wheels-{PYTHON}-recipe", key, make)


def reference_wheels(cache_dir):
    """A directory with the wheels of the newest reference release and its
    dependencies, downloaded once: delete it to pick up a newer one."""
    path = cached(cache_dir, f"wheels-{PYTHON}-reference", "newest",
                  lambda dest: download(dest, REFERENCE))
    wheel = next(path.glob(REFERENCE.replace(".", "_") + "-*.whl"))
    return path, wheel.name.split("-")[1]


def buildout_venv(cache_dir):
    """bin/ of a venv with zc.buildout alone, run by both buildouts."""
    return cached(cache_dir, "buildout-venv", PYTHON,
                  lambda path: make_venv(path, "zc.buildout")) / "bin"


def zeo_venv(cache_dir, wheels):
    """bin/ of a venv with ZEO from WHEELS, for plain ZEO."""
    return cached(cache_dir, "zeo-venv", wheels.name,
                  lambda path: make_venv(
                      path, "ZEO", pip_args=["--no-index", "--find-links",
                                             wheels])) / "bin"


# -- the setups -------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port):
    """True when something accepts connections on 127.0.0.1:PORT."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(POLL)


def alive(pid):
    """True while process PID exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_using(directory):
    """Pids of processes whose command line mentions DIRECTORY."""
    marker = str(directory).rstrip("/").encode() + b"/"
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


class Buildout:
    """A buildout directory with one ZEO part (or none), driven as a user
    would: bin/buildout, bin/zeo start|status|stop, bin/zeopack, bin/repozo.
    """

    def __init__(self, name, directory, buildout, recipe, find_links,
                 eggs_dir):
        self.name = name
        self.dir = Path(directory)
        self.buildout_script = buildout
        self.recipe = recipe
        self.find_links = find_links  # directories of wheels; 1st: index
        self.eggs_dir = eggs_dir
        self.port = free_port()

    def config(self):
        text = textwrap.dedent(f"""\
            [buildout]
            parts = {"zeo" if self.recipe else ""}
            find-links = {" ".join(map(str, self.find_links))}
            index = file://{self.find_links[0]}/
            eggs-directory = {self.eggs_dir}
            newest = false
            """)
        if self.recipe:
            text += textwrap.dedent(f"""
                [zeo]
                recipe = {self.recipe}
                zeo-address = 127.0.0.1:{self.port}
                """)
        return text

    def clone(self, directory):
        """The same buildout in another (new) directory."""
        other = Buildout(self.name, directory, self.buildout_script,
                         self.recipe, self.find_links, self.eggs_dir)
        other.port = self.port
        return other

    def run_buildout(self):
        """Seconds bin/buildout takes (writing buildout.cfg if needed)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "buildout.cfg"
        if not cfg.exists():
            cfg.write_text(self.config())
        return timed([self.buildout_script, "-c", cfg], cwd=self.dir)

    def script(self, name, *args):
        return [self.dir / "bin" / name, *args]

    @property
    def data_fs(self):
        return self.dir / "var" / "filestorage" / "Data.fs"

    def start(self):
        """Seconds until `start` returned and the port accepts."""
        started = time.perf_counter()
        run(self.script("zeo", "start"), cwd=self.dir)
        wait_for(lambda: accepts(self.port), f"a server on {self.port}")
        return time.perf_counter() - started

    def status(self):
        return timed(self.script("zeo", "status"), cwd=self.dir)

    def check(self):
        return timed(self.script("zeo", "check"), cwd=self.dir)

    def stop(self):
        """Seconds until `stop` returned and the server processes are gone."""
        pids = processes_using(self.dir)
        started = time.perf_counter()
        run(self.script("zeo", "stop"), cwd=self.dir)
        wait_for(lambda: not any(map(alive, pids)), "the server to exit")
        return time.perf_counter() - started

    def pack_command(self):
        return self.script("zeopack", "-d", "0")

    def repozo_command(self, source, backups):
        return self.script("repozo", "-B", "-F", "-r", backups, "-f", source)

    def cleanup(self):
        """Stop the server, politely, then by force."""
        if (self.dir / "bin" / "zeo").exists():
            with contextlib.suppress(Exception):
                run(self.script("zeo", "stop"), cwd=self.dir, timeout=WAIT)
        for pid in processes_using(self.dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class PlainZEO:
    """ZEO's runzeo serving one FileStorage, no buildout, no zdaemon;
    its commands are those of the venv whose bin/ is BIN."""

    def __init__(self, name, directory, bin):
        self.name = name
        self.bin = bin
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process = None

    @property
    def data_fs(self):
        return self.dir / "Data.fs"

    def start(self):
        started = time.perf_counter()
        with open(self.dir / "runzeo.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.bin / "runzeo", "-a", f"127.0.0.1:{self.port}",
                 "-f", self.data_fs], stdout=log, stderr=subprocess.STDOUT,
                # A session of its own, as a daemon has: with the kernel's
                # autogroup scheduling, the session decides the CPU share.
                start_new_session=True)
        wait_for(lambda: accepts(self.port) or self.process.poll() is not None,
                 f"runzeo on {self.port}")
        if self.process.poll() is not None:
            raise RuntimeError(f"runzeo exited; see {self.dir}/runzeo.log")
        return time.perf_counter() - started

    def stop(self):
        started = time.perf_counter()
        self.process.terminate()
        self.process.wait(WAIT)
        self.process = None
        return time.perf_counter() - started

    def pack_command(self):
        # ClientStorage.pack as ZEO's zeopack calls it, minus zeopack's
        # whole-second sleep while the client connects.
        return [self.bin / "python", "-c", PACK, str(self.port)]

    def repozo_command(self, source, backups):
        return [self.bin / "python", "-m", "ZODB.scripts.repozo", "-B", "-F",
                "-r", backups, "-f", source]

    def cleanup(self):
        if self.process:
            self.process.kill()
            self.process.wait(WAIT)
            self.process = None
