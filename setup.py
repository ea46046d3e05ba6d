from setuptools import find_namespace_packages
from setuptools import setup


# zodbupdate: bin/<part> convert-py3 converts Python 2 databases with it.
SERVER = ["ZODB >= 6", "ZEO >= 6", "ZConfig >= 4", "zdaemon >= 5",
          "zodbupdate >= 3"]
TLS = ["cryptography >= 42"]
ZRS = "zc.zrs == 3.1.0"


def read(name):
    with open(name, encoding="utf-8") as f:
        return f.read()


setup(
    name="plone.recipe.zope2zeoserver",
    version="2.0.0",
    description="zc.buildout recipe that installs and runs a ZEO server",
    long_description=read("README.rst") + "\n\n" + read("CHANGES.rst"),
    long_description_content_type="text/x-rst",
    author="Plone Foundation",
    author_email="plone-developers@lists.sourceforge.net",
    url="https://github.com/plone/plone.recipe.zope2zeoserver",
    license="ZPL-2.1",
    classifiers=[
        "Framework :: Buildout",
        "Framework :: Buildout :: Recipe",
        "Framework :: ZODB",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Database",
    ],
    keywords="buildout recipe zeo zodb zope plone",
    python_requires=">=3.10",
    packages=find_namespace_packages("src", include=["plone.*"]),
    package_dir={"": "src"},
    package_data={"plone.recipe.zope2zeoserver": ["*.in", "*.xml", "*.json"]},
    include_package_data=True,
    zip_safe=False,
    # Nothing: zc.buildout resolves and fingerprints a recipe's whole
    # requirement closure on every run, and a closure that reaches the
    # buildout's own site-packages (zc.buildout, setuptools) makes it hash
    # every file there.  The recipe runs inside zc.buildout, and asks it
    # for the extras below when a part needs them (recipe.py).
    install_requires=[],
    extras_require={
        # What the generated scripts run: every part gets these.
        "server": SERVER,
        # tls-generate makes certificates with it, and the build checks
        # TLS files with it; the server does not need it.
        "tls": TLS,
        # Replication (replicate-to/replicate-from), added to a part's
        # eggs by the recipe.  Pinned: zrscompat.py adapts exactly these
        # versions to ZODB 6 and is tested with them.
        "zrs": [ZRS],
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "packaging",
                 "zc.buildout", "supervisor",
                 # The README must render as the package index shows it.
                 "docutils",
                 *SERVER, *TLS, ZRS],
    },
    entry_points={
        "zc.buildout": ["default = plone.recipe.zope2zeoserver.recipe:Recipe"],
        "zc.buildout.uninstall": [
            "default = plone.recipe.zope2zeoserver.recipe:uninstall"
        ],
    },
)
