"""What a wheel install brings: the stack with a CPU or GPU TensorFlow, matplotlib, the script."""

import re
import tomllib

from helpers import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(lines) -> dict:
    found = {}
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*([=<>!~].*)?$", line.split("#")[0])
        if match:
            found[match.group(1).lower()] = (match.group(3) or "").strip()
    return found


def test_cpu_and_gpu_extras_pin_the_same_tensorflow():
    extras = PROJECT["optional-dependencies"]
    assert extras["cpu"] == ["tensorflow-cpu==2.15.1"]
    assert extras["gpu"] == ["tensorflow[and-cuda]==2.15.1"]
    assert not any("tensorflow" in d for d in PROJECT["dependencies"])


def test_the_wheel_brings_what_evaluate_needs_and_not_a_horovod_it_cannot_build():
    deps = pins(PROJECT["dependencies"])
    assert "matplotlib" in deps
    assert "horovod" not in deps  # built from source against the installed TensorFlow


def test_requirements_and_the_wheel_pin_the_same_versions():
    wheel = pins(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["cpu"])
    requirements = pins((ROOT / "requirements.txt").read_text().splitlines())
    for name, spec in wheel.items():
        assert requirements.get(name) == spec, name


def test_the_gpu_discovery_script_ships_in_the_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-data"]["hvd_otto.app"] == ["gpu_discovery.sh"]
    assert (ROOT / "hvd_otto" / "app" / "gpu_discovery.sh").exists()
