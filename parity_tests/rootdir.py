"""Roots a run at the project when pytest took its rootdir from an option's value.

pytest picks its rootdir from the path-like words of the command line before any plugin
can declare options, so `pytest --parity-data /abs/mnist.npz` run in the project roots the
session at /abs and reads no pyproject.toml (no testpaths, no addopts, and the test ids
lose their parity_tests/ prefix). The plugin's pytest_load_initial_conftests calls
`reroot` (see there for when it can).
"""

from pathlib import Path

from parity_tests.settings import ROOT

PYPROJECT = ROOT / "pyproject.toml"


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def reroot(early_config, args) -> None:
    """Re-read the project's configuration when the run is about the project (run from
    inside it, or naming a path inside it) and no --rootdir or -c says otherwise."""
    from _pytest.config.findpaths import locate_config, parse_override_ini

    ns = early_config.known_args_namespace
    here = early_config.invocation_params.dir
    if early_config.inipath == PYPROJECT or ns.rootdir or ns.inifilename:
        return
    named = [Path(here, a).resolve() for a in ns.file_or_dir]
    if not (inside(here.resolve(), ROOT) or any(inside(p, ROOT) for p in named)):
        return
    rootdir, inipath, inicfg, _ = locate_config(here, [ROOT])
    if inipath != PYPROJECT:
        return
    early_config._rootpath, early_config._inipath = rootdir, inipath
    early_config._inicfg = {**inicfg, **parse_override_ini(ns.override_ini)}
    early_config._inicache.clear()
    ns.confcutdir = str(ROOT)
    args[:] = [*early_config.getini("addopts"), *args]
