# -*- coding: utf-8 -*-
"""Write ZODB FileStorages the way a Python 2 deployment did.

PYTHON 2.7 ONLY, with ZODB 5.6 importable.  Run it via make_py2_data.sh
(which installs ZODB 5.6 into a temp dir), not directly:

    sh tests/data/make_py2_data.sh

Usage: python2.7 make_py2_data_py2.py OUTDIR   (OUTDIR is wiped first)

Writes into OUTDIR:

  Data.fs, Data.fs.index   FileStorage (magic b'FS21'); the index is
                           written by FileStorage.close() (Python 2 pickle)
  blobstorage/             blob dir of Data.fs, layout 'bushy'
  Other.fs, Other.fs.index second FileStorage, no blobs
  EXPECTED.txt             the content below, plus the transaction ids

Content of Data.fs (str = Python 2 byte string; in brackets: the value
as read back on Python 3 / ZODB 6.4 after `zodbupdate 3.0 --convert-py3
--encoding utf8 --encoding-fallback latin1`; all text comes back as str
unless marked bytes):

  root['title_utf8']   = 'Caf\\xc3\\xa9 K\\xc3\\xb6ln'  UTF-8 bytes  ['Café Köln']
  root['title_latin1'] = 'Gr\\xfc\\xdfe'   Latin-1, not UTF-8
                         [bytes b'Gr\\xfc\\xdfe', NOT 'Grüße': the generic
                         --encoding pass unpickles with errors='bytes';
                         --encoding-fallback is only used by attribute
                         decoders registered via the 'zodbupdate.decode'
                         entry point, and none is registered for this]
  root['ascii']        = 'plain ascii'                       ['plain ascii']
  root['unicode']      = u'\\xdcbung \\u2713'                  ['Übung ✓']
  root['counter']      = 3   (1, 2, 3 in transactions 2, 3, 4)
  root['tree']   = BTrees.OOBTree.OOBTree, 200 items
                   'key-000' .. 'key-199' -> u'value 0' .. u'value 199'
                   (i.e. 'key-%03d' % i -> u'value %d' % i)
  root['itree']  = BTrees.IOBTree.IOBTree, 100 items
                   0 .. 99 -> 'item-000' .. 'item-099'  ('item-%03d' % i)
  root['folder'] = persistent.mapping.PersistentMapping:
                   'items' -> persistent.list.PersistentList(
                                  [1, 'two', u'three', 'vier \\xc3\\xa4'])
                   'sub'   -> persistent.mapping.PersistentMapping:
                                  'title' -> 'Sous-\\xc3\\xa9l\\xc3\\xa9ment'
                                             UTF-8 bytes ['Sous-élément']
                                  'n'     -> 42
  root['blob']   = ZODB.blob.Blob, content exactly
                   b'blob content written by Python 2\\n' * 10 (330 bytes)
  root['document'] = zeotestapp.Document (an application's class, as
                   Plone's content is), attributes:
                   title = 'Gr\\xfc\\xdfe'  Latin-1 [bytes, unless the
                           application's egg registers a 'zodbupdate.decode'
                           rule for 'zeotestapp Document title': then
                           'Grüße' through --encoding-fallback latin1]
                   body  = 'K\\xc3\\xb6ln'  UTF-8 ['Köln']

Transactions of Data.fs (tids from a fake clock, see FAKE_START):
  1. DB() creates the root                 user '' description 'initial database creation'
  2. titles, ascii, unicode, counter=1     user '/plone admin'
                                           description 'Add titles'
                                           extension {'source': 'make_py2_data'}
  3. tree, itree, folder, counter=2        user '' description ''
  4. blob, counter=3                       user '' description 'Add blob'
  5. document                              user '' description ''

Content of Other.fs:
  root['name']    = 'second storage \\xc3\\xa9'  UTF-8 bytes ['second storage é']
  root['numbers'] = BTrees.IOBTree.IOBTree, 50 items i -> i * 10, i in 0..49
Transactions: 1. root creation, 2. name + numbers (description 'Other').

Py3 notes: both files start with b'FS21'; ZODB 6 raises
FileStorageFormatError('Data.fs') on them (after logging an ERROR
'loading index' traceback, because the Python 2 .index does not unpickle).
zodbupdate --convert-py3 works in place: overwrites the magic with b'FS30',
appends ONE new transaction with every non-blob object repickled (older
records keep their Python 2 pickles), rewrites the .index on close.  The
blob record/file is left alone and still loads.  Transaction user and
description read back as bytes, the extension as {'source': 'make_py2_data'}.

Nothing is packed.
"""
from __future__ import print_function

import os
import shutil
import sys
import time

assert sys.version_info[:2] == (2, 7), "run this with Python 2.7"

# A fake clock, so that transaction ids (and therefore blob file names
# and every byte of the files) are the same on every run.  Each call
# advances by one second.
FAKE_START = 1433160000.0  # 2015-06-01 12:00:00 UTC
_clock = [FAKE_START]


def _fake_time():
    _clock[0] += 1.0
    return _clock[0]


time.time = _fake_time

import transaction  # noqa: E402
import ZODB  # noqa: E402
from BTrees.IOBTree import IOBTree  # noqa: E402
from BTrees.OOBTree import OOBTree  # noqa: E402
from persistent.list import PersistentList  # noqa: E402
from persistent.mapping import PersistentMapping  # noqa: E402
from ZODB.blob import Blob  # noqa: E402
from ZODB.FileStorage import FileStorage  # noqa: E402
from ZODB.utils import tid_repr  # noqa: E402

BLOB_CONTENT = b'blob content written by Python 2\n' * 10


def application_module():
    """zeotestapp, an application's module (as Products.CMFPlone is):
    the tests give Python 3 a module of that name, in an egg that
    registers zodbupdate rules for its class."""
    import types
    from persistent import Persistent
    module = types.ModuleType('zeotestapp')

    class Document(Persistent):
        pass

    Document.__module__ = 'zeotestapp'
    module.Document = Document
    sys.modules['zeotestapp'] = module
    return module


def cleanup(out, name):
    # Leftovers that are not test data.
    for suffix in ('.lock', '.tmp', '.index_tmp'):
        p = os.path.join(out, name + suffix)
        if os.path.exists(p):
            os.remove(p)


def txn_list(path):
    fs = FileStorage(path, read_only=True)
    try:
        return [(str(tid_repr(t.tid)), t.user, t.description, t.extension)
                for t in fs.iterator()]
    finally:
        fs.close()


def make_data(out):
    path = os.path.join(out, 'Data.fs')
    storage = FileStorage(path, blob_dir=os.path.join(out, 'blobstorage'))
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    root = conn.root()

    t = tm.begin()
    root['title_utf8'] = 'Caf\xc3\xa9 K\xc3\xb6ln'
    root['title_latin1'] = 'Gr\xfc\xdfe'
    root['ascii'] = 'plain ascii'
    root['unicode'] = u'\u00dcbung \u2713'
    root['counter'] = 1
    t.setUser(u'admin', u'/plone')
    t.note(u'Add titles')
    t.setExtendedInfo('source', 'make_py2_data')
    tm.commit()

    tm.begin()
    tree = OOBTree()
    for i in range(200):
        tree['key-%03d' % i] = u'value %d' % i
    root['tree'] = tree
    itree = IOBTree()
    for i in range(100):
        itree[i] = 'item-%03d' % i
    root['itree'] = itree
    folder = PersistentMapping()
    folder['items'] = PersistentList([1, 'two', u'three', 'vier \xc3\xa4'])
    sub = PersistentMapping()
    sub['title'] = 'Sous-\xc3\xa9l\xc3\xa9ment'
    sub['n'] = 42
    folder['sub'] = sub
    root['folder'] = folder
    root['counter'] += 1
    tm.commit()

    t = tm.begin()
    blob = Blob()
    with blob.open('w') as f:
        f.write(BLOB_CONTENT)
    root['blob'] = blob
    root['counter'] += 1
    t.note(u'Add blob')
    tm.commit()

    tm.begin()
    document = application_module().Document()
    document.title = 'Gr\xfc\xdfe'
    document.body = 'K\xc3\xb6ln'
    root['document'] = document
    tm.commit()

    conn.close()
    db.close()  # closes the storage, which writes Data.fs.index
    cleanup(out, 'Data.fs')
    tmp = os.path.join(out, 'blobstorage', 'tmp')
    if os.path.isdir(tmp) and not os.listdir(tmp):
        os.rmdir(tmp)  # git can't keep empty dirs anyway
    return path


def make_other(out):
    path = os.path.join(out, 'Other.fs')
    db = ZODB.DB(FileStorage(path))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    root = conn.root()
    t = tm.begin()
    root['name'] = 'second storage \xc3\xa9'
    numbers = IOBTree()
    for i in range(50):
        numbers[i] = i * 10
    root['numbers'] = numbers
    t.note(u'Other')
    tm.commit()
    conn.close()
    db.close()
    cleanup(out, 'Other.fs')
    return path


def main():
    out = os.path.abspath(sys.argv[1])
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    data = make_data(out)
    other = make_other(out)
    for p in (data, other):
        assert os.path.exists(p + '.index'), p + '.index not written'
        with open(p, 'rb') as f:
            assert f.read(4) == b'FS21'

    # EXPECTED.txt: the docstring (content description) + what was written.
    lines = [__doc__.split('\nNothing is packed.')[0].strip(), '',
             'Written by: Python %s, ZODB %s' % (
                 sys.version.split()[0],
                 __import__('pkg_resources').get_distribution('ZODB').version),
             '']
    for p in (data, other):
        lines.append('Transactions in %s (tid, user, description, extension):'
                     % os.path.basename(p))
        for tid, user, desc, ext in txn_list(p):
            lines.append('  %s %r %r %r' % (tid, user, desc, ext))
        lines.append('')
    lines.append('Files:')
    for dirpath, dirnames, filenames in sorted(os.walk(out)):
        dirnames.sort()
        for name in sorted(filenames):
            if name == 'EXPECTED.txt':
                continue
            p = os.path.join(dirpath, name)
            lines.append('  %s %d' % (os.path.relpath(p, out),
                                      os.path.getsize(p)))
    with open(os.path.join(out, 'EXPECTED.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('wrote', out)


if __name__ == '__main__':
    main()
