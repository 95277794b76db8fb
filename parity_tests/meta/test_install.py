"""Where torch comes from (issue 24): the requirements files name PyTorch's CPU wheel index
and pin its CPU build, and pip resolves requirements.txt to no CUDA package.

On Linux x86_64, PyPI's torch is the CUDA build (it pulls nvidia-*, cuda-* and triton,
~3 GB); the CPU build carries the local version "+cpu", which PyPI never has, so a "+cpu"
pin can only come from PyTorch's CPU index or a wheel of pip's own configuration. Elsewhere
(macOS, aarch64) the CPU index's wheels carry no "+cpu": there the pin is the plain version.
docs/running.md, "Where torch comes from", has the sizes and the timings.
"""

import configparser
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The platforms a pin is checked for: (sys_platform, platform_machine).
LINUX_X86_64 = ("linux", "x86_64")
OTHERS = [("linux", "aarch64"), ("darwin", "arm64"), ("win32", "AMD64")]
CUDA_PREFIXES = ("nvidia-", "cuda-", "triton")


def _torch_pins(lines: list[str], platform: tuple[str, str]) -> list[str]:
    """The specifiers of the torch requirements among `lines` that apply on `platform`."""
    env = {"sys_platform": platform[0], "platform_machine": platform[1]}
    pins = []
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        if req.name.lower() == "torch" and (req.marker is None or req.marker.evaluate(env)):
            pins.append(str(req.specifier))
    return pins


def _check_torch(lines: list[str], version: str, where: str) -> None:
    assert f"--extra-index-url {CPU_INDEX}" in [line.strip() for line in lines], (
        f"{where} does not name PyTorch's CPU index ({CPU_INDEX})"
    )
    assert _torch_pins(lines, LINUX_X86_64) == [f"=={version}+cpu"], (
        f"{where}: on Linux x86_64 torch must be pinned to the CPU build {version}+cpu "
        "(plain torch there is PyPI's CUDA build)"
    )
    for platform in OTHERS:
        assert _torch_pins(lines, platform) == [f"=={version}"], (where, platform)


def _file_lines(name: str) -> list[str]:
    return (ROOT / name).read_text(encoding="utf-8").splitlines()


def test_requirements_txt_names_the_cpu_index_and_the_cpu_build():
    _check_torch(_file_lines("requirements.txt"), "2.13.0", "requirements.txt")


def test_only_requirements_txt_brings_torch():
    # requirements-base.txt is the set without the frameworks (tox's compat envs and the
    # workflow add their own torch); requirements-dev.txt takes requirements.txt whole.
    for name in ("requirements-base.txt", "requirements-dev.txt"):
        lines = _file_lines(name)
        assert _torch_pins(lines, LINUX_X86_64) == [], name
    assert "-r requirements.txt" in _file_lines("requirements-dev.txt")


def test_tox_compat_envs_name_the_cpu_index_and_the_cpu_builds():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    section = next(s for s in tox.sections() if s.startswith("testenv:compat-"))
    deps = [line.strip() for line in tox[section]["deps"].splitlines() if line.strip()]
    # "torch212: torch==2.12.0+cpu ; marker" -> per factor, the lines without the factor.
    factors: dict[str, list[str]] = {}
    for line in deps:
        found = re.match(r"(torch\d+):\s*(.*)", line)
        if found:
            factors.setdefault(found.group(1), []).append(found.group(2))
    assert set(factors) == set(re.findall(r"torch\d+", section)), (section, factors)
    common = [line for line in deps if not re.match(r"\w+:", line)]
    for factor, lines in factors.items():
        version = re.search(r"torch==([\w.]+)", lines[0]).group(1)
        _check_torch(common + lines, version, f"tox.ini {section} ({factor})")


@pytest.mark.slow
def test_pip_resolves_requirements_txt_to_no_cuda_package():
    # What `pip install -r requirements.txt` would install into an empty venv, with this
    # machine's pip configuration (its index, its --find-links). PIP_RETRIES as ./parity
    # sets it: an index that can't be reached costs seconds, not minutes.
    env = {**os.environ, "PIP_RETRIES": os.environ.get("PIP_RETRIES", "1")}
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    cmd += ["--quiet", "--report", "-", "-r", "requirements.txt"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (
        "pip could not resolve requirements.txt (torch's CPU build needs PyTorch's CPU index "
        f"or a wheel in pip's configuration):\n{run.stderr[-3000:]}"
    )
    # Names as the wheels spell them (tensorflow_cpu): normalized as PEP 503 does.
    installs = {
        re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
        for item in json.loads(run.stdout)["install"]
    }
    assert "torch" in installs and "tensorflow-cpu" in installs, sorted(installs)
    cuda = sorted(name for name in installs if name.startswith(CUDA_PREFIXES))
    assert cuda == [], f"requirements.txt resolves CUDA packages: {cuda}"
    if sys.platform == "linux" and os.uname().machine == "x86_64":
        assert installs["torch"] == "2.13.0+cpu", installs["torch"]
