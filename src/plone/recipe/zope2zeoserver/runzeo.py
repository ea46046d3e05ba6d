"""parts/<part>/bin/runzeo: the ZEO server process.

ZEO's runzeo with the part's zeo.conf baked in.  zdaemon runs this
program; `bin/<part> fg`, systemd or supervisord may run it directly.
"""

import os
import sys

import ZEO.runzeo

from plone.recipe.zope2zeoserver.zeoconf import BUILDOUT_ENV


def main(zeo_conf, buildout_dir, args=None):
    """Run the server configured by ZEO_CONF until it is stopped."""
    os.environ[BUILDOUT_ENV] = buildout_dir
    if args is None:
        args = sys.argv[1:]
    ZEO.runzeo.main(["-C", zeo_conf] + list(args))
