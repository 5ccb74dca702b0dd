"""Maps the design's top-level folders onto the ``vopstore`` namespace.

``trainer/``, ``cli/`` and ``migrations/`` are installed as ``vopstore.trainer``,
``vopstore.cli`` and ``vopstore.migrations``: bare top-level ``trainer``/``cli``
modules would collide with other PyPI packages in users' environments.
Sub-packages are discovered, so a new folder needs no edit here.
"""

from setuptools import find_packages, setup

ROOTS = {
    "vopstore": "vopstore",
    "vopstore.trainer": "trainer",
    "vopstore.cli": "cli",
    "vopstore.migrations": "migrations",
}

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
