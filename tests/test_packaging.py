"""The package as a user installs it: the runtime imports none of the optional extras, and a non-editable wheel
carries its engines (and the other package data), which a node started outside the checkout finds and loads."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from edge.config import tomllib  # tomli on Python 3.10

REPO = Path(__file__).resolve().parent.parent
OPTIONAL = {"torch", "matplotlib", "wfdb", "amqtt"}


def imported_modules(statement: str) -> set[str]:
    """Top-level modules a fresh interpreter loads for ``statement`` (from ``python -X importtime``)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=True)
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("statement", ["import edge", "import edge.app", "import beatssl.cli"])
def test_the_runtime_loads_no_optional_extra(statement: str) -> None:
    loaded = imported_modules(statement)
    assert "edge" in loaded  # the measurement itself works
    assert not loaded & OPTIONAL, sorted(loaded & OPTIONAL)


def test_extras_fit_their_use() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {d.split(">")[0].split("=")[0].split(";")[0].strip() for d in project["dependencies"]}
    assert runtime == {"numpy", "numba", "scipy", "paho-mqtt", "typer", "rich", "onnxruntime", "tomli"}
    extras = project["optional-dependencies"]
    assert extras["demo"] == ["beatssl-edge[sim,broker]"]  # no torch in `make demo`
    assert "torch==2.13.0" in extras["train"] and "tensorrt>=10,<11" in extras["tensorrt"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel of this checkout installed, not editable.

    The runtime dependencies come from this interpreter's site-packages through a .pth line (the machine's own
    Python has none of them, so ``--system-site-packages`` alone would not provide them, and nothing is downloaded);
    that directory's own .pth files (the checkout's editable install) are not processed, so the package is imported
    from the new venv only.
    """
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(REPO)], check=True, timeout=300, capture_output=True)
    wheel = next((root / "dist").glob("beatssl_edge-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "runtime-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
                    "--ignore-installed", "-q", str(wheel)], check=True, timeout=300, capture_output=True)
    return venv


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BEATSSL_") and k != "PYTHONPATH"}


@pytest.mark.slow
def test_the_wheel_carries_the_package_data(installed: Path) -> None:
    wheel = next(installed.parent.glob("dist/*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("engines/__init__.py", "engines/wave-seg/manifest.json", "engines/wave-seg/model.onnx",
                 "engines/rhythm-cls/model.onnx", "viewers/web_static/index.html", "simulator/sample/RECORDS",
                 "train/configs/cpu-small-pretrain.yaml"):
        assert name in names, name
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


@pytest.mark.slow
def test_an_installed_node_finds_its_engines_outside_the_checkout(installed: Path, broker, tmp_path: Path) -> None:
    exe = installed / "bin" / "beatssl-edge"
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import engines; print(engines.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), check=True).stdout
    assert where.startswith(str(installed)), where  # the installed copy, not the checkout
    run = [str(exe), "run", "--broker", str(broker.address), "--duration-s", "1"]
    proc = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "segment engine wave-seg on onnxruntime" in proc.stderr
    assert "classify engine rhythm-cls on onnxruntime" in proc.stderr
    empty = tmp_path / "no-engines"
    empty.mkdir()
    proc = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**_clean_env(), "BEATSSL_ENGINES": str(empty)})
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and f"no engines found in {empty}" in proc.stderr
