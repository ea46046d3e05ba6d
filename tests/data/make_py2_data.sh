#!/bin/sh
# make_py2_data.sh -- regenerate the Python-2-written ZODB test databases.
#
# WHAT: writes tests/data/py2/ (committed test data):
#   Data.fs, Data.fs.index, blobstorage/   FileStorage + blobs (layout 'bushy')
#   Other.fs, Other.fs.index               second FileStorage, no blobs
#   EXPECTED.txt                           the exact content, for tests
# The content is described in EXPECTED.txt and at the top of
# make_py2_data_py2.py (which does the actual writing).
#
# WHY: deployments migrating from Python 2 (Plone 4 / Zope 2 era) bring
# FileStorages written by Python 2: magic b'FS21', pickles with Python 2
# byte strings (UTF-8 *and* non-UTF-8 ones), a Python-2-pickled .index
# file and a blob directory.  ZODB on Python 3 refuses such a file
# until it is converted (zodbupdate --convert-py3).  Tests for the
# recipe's handling of such files need a real one; this script makes it
# reproducibly instead of committing a mystery binary.
#
# HOW:  sh tests/data/make_py2_data.sh         (from anywhere)
#   Needs: Python 2.7 (default: $(pyenv root)/versions/2.7.18/bin/python,
#          override with PY2=/path/to/python2.7) and network/pip access to
#          install ZODB 5.6 wheels for Python 2.7.
#   Env:   PY2      python 2.7 interpreter
#          PY2LIB   install dir for ZODB 5.6 (default /tmp/py2zodb; reused
#                   if it already contains ZODB 5.6.0; never put it in the
#                   repository)
# The old tests/data/py2/ is removed and rewritten.  Transaction ids come
# from a fixed fake clock, so the output is byte-for-byte deterministic
# for the same package versions (the script pins them).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PY2=${PY2:-$(pyenv root)/versions/2.7.18/bin/python}
PY2LIB=${PY2LIB:-/tmp/py2zodb}

case "$PY2LIB" in
    "$HERE"*|"$(cd "$HERE/../.." && pwd)"*)
        echo "PY2LIB must be outside the repository" >&2; exit 1;;
esac

"$PY2" -c 'import sys; assert sys.version_info[:2] == (2, 7), sys.version'

if ! PYTHONPATH="$PY2LIB" "$PY2" -c \
        'import ZODB, pkg_resources as p; assert p.get_distribution("ZODB").version == "5.6.0"' \
        >/dev/null 2>&1; then
    rm -rf "$PY2LIB"
    # Pinned so that the bytes written stay the same between runs.
    "$PY2" -m pip install --disable-pip-version-check -q \
        --only-binary=:all: --target "$PY2LIB" \
        'ZODB==5.6.0' 'BTrees==4.9.2' 'persistent==4.7.0' \
        'transaction==3.1.0' 'zodbpickle==2.0.0' 'zope.interface==5.4.0' \
        'zc.lockfile==2.0' 'ZConfig==3.6.1' 'six==1.17.0'
    # --target does not process the *-nspkg.pth files: make zope/zc
    # importable as pkgutil-style namespace packages.
    for ns in zope zc; do
        echo "__path__ = __import__('pkgutil').extend_path(__path__, __name__)" \
            > "$PY2LIB/$ns/__init__.py"
    done
fi

PYTHONPATH="$PY2LIB" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 \
    "$PY2" "$HERE/make_py2_data_py2.py" "$HERE/py2"
