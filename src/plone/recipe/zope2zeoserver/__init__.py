"""zc.buildout recipe that installs and runs a ZEO server.

Nothing is imported here, so the run-time modules (ctl, runzeo, pack) load
without zc.buildout.
"""
