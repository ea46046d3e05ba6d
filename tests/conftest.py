"""Shared fixtures: a real buildout in a temp dir, a real server on a free
127.0.0.1 port.  The helpers tests call are in helpers.py.

The recipe is built once per test session as a wheel from this checkout;
every buildout finds it (and nothing else) through a local index, and all
buildouts share one eggs directory, so no test touches the network.
"""

import fcntl
import os
import subprocess
import sys

import pytest

from helpers import ROOT, buildout_venv, new_buildout, start


@pytest.fixture(scope="session")
def dist_dir(tmp_path_factory):
    """A directory holding the wheel of this checkout, built once per test
    run, beside the buildout venv (`buildout_venv`): pytest-xdist workers
    share them, because builds running at the same time collide in the
    checkout's build/ directory."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    dist = root / "dist"
    with open(root / "dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any(dist.glob("*.whl")):
            buildout_venv(root / "buildout-venv")
            dist.mkdir(exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                 "--no-build-isolation", "--wheel-dir", str(dist), str(ROOT)],
                check=True, capture_output=True)
    return dist


@pytest.fixture(scope="session")
def eggs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("eggs")


@pytest.fixture
def buildout(tmp_path, dist_dir, eggs_dir):
    """An empty buildout directory; its servers are stopped afterwards."""
    with new_buildout(tmp_path / "buildout", dist_dir, eggs_dir) as b:
        yield b


@pytest.fixture
def server(buildout):
    """A buildout with the default part installed and its server started."""
    buildout.install()
    start(buildout)
    return buildout
