"""onnxruntime comes in two builds, onnxruntime (CPU) and onnxruntime-gpu (CUDA), that install the same
`onnxruntime` module and break each other when installed together. rawdev depends on neither; its
extras name one. What a user sees without onnxruntime, without CUDA and with both builds; the
packaging rule, read from pyproject.toml; and the CUDA check script's refusal. No GPU is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import random_mosaic, write_test_dng
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from rawdev.cli import app
from rawdev.session import BUILDS, available_providers, installed_builds

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "examples" / "chart_bayer.dng"
CUDA_HERE = "CUDAExecutionProvider" in available_providers()


def _python(code: str, *args: str, path: list[Path] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -c code args`` in a fresh process, with ``path`` and then this checkout first on sys.path."""
    parts = [*map(str, path), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in parts if p), COLUMNS="200")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


# --- --device cuda where CUDA is not available ---------------------------------------------------


@pytest.fixture
def cpu_build(monkeypatch):
    """What the CPU build of onnxruntime offers, whatever is installed here."""
    import rawdev.session

    monkeypatch.setattr(rawdev.session, "available_providers", lambda: ["AzureExecutionProvider",
                                                                        "CPUExecutionProvider"])


@pytest.fixture
def dng(tmp_path) -> Path:
    (tmp_path / "in").mkdir()
    return write_test_dng(tmp_path / "in" / "x.dng", random_mosaic(32, 48), "RGGB")


def test_cuda_without_cuda_is_refused_in_one_line_naming_the_gpu_extra_before_anything_is_written(
        cpu_build, dng, tmp_path, bilinear_model):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["develop", str(dng), "-o", str(out), "--device", "cuda",
                                      "--model", str(bilinear_model)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: device 'cuda' needs CUDAExecutionProvider, which this onnxruntime build does not")
    assert "pip install 'rawdev[gpu]'" in line and "--device cpu" in line
    assert not out.exists()  # not even the output folder


def test_a_device_that_fails_when_the_session_opens_leaves_no_output_folder(dng, tmp_path, bilinear_model,
                                                                             monkeypatch):
    """onnxruntime-gpu offers CUDA, but the session cannot use it (no driver or libraries): the
    refusal comes after the device check, and still before anything is created."""
    import rawdev.session

    def no_cuda(*args, **kwargs):
        raise rawdev.session.DeviceUnavailable("device 'cuda': onnxruntime could not load the CUDA libraries")

    monkeypatch.setattr(rawdev.session, "open_session", no_cuda)
    out = tmp_path / "new" / "out"
    result = CliRunner().invoke(app, ["develop", str(dng), "-o", str(out), "--model", str(bilinear_model)])
    assert result.exit_code == 2, result.output
    assert "could not load the CUDA libraries" in result.output
    assert not (tmp_path / "new").exists()


def test_compare_refuses_cuda_without_cuda_the_same_way(cpu_build, dng, bilinear_model):
    result = CliRunner().invoke(app, ["compare", str(dng), str(ROOT / "examples" / "chart_reference.png"),
                                      "--device", "cuda", "--model", str(bilinear_model)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "CUDAExecutionProvider" in line and "pip install 'rawdev[gpu]'" in line


def test_auto_takes_the_cpu_where_the_cpu_build_is_installed(cpu_build, dng, tmp_path, bilinear_model):
    result = CliRunner().invoke(app, ["develop", str(dng), "-o", str(tmp_path / "out"), "--model", str(bilinear_model)])
    assert result.exit_code == 0, result.output
    assert "on CPUExecutionProvider" in result.output and "not usable" not in result.output


class _CpuOnlySession:
    """An onnxruntime session that was asked for CUDA and applied only the CPU (onnxruntime-gpu without
    the CUDA libraries does that, after printing why on its native stderr)."""

    def __init__(self, real):
        self._real = real

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def gpu_build_without_cuda(monkeypatch):
    import rawdev.session

    real = rawdev.session._inference_session

    def fake(path, options, providers):
        session = real(path, options, ["CPUExecutionProvider"])
        first = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if first != "CUDAExecutionProvider":
            return session
        os.write(2, b"\x1b[1;31m2026-12-01 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] Failed to "
                    b"load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open "
                    b"shared object file: No such file or directory\n\x1b[m\n[W:onnxruntime:Default, x.cc:1] Failed "
                    b"to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*. Please install all\n")
        return _CpuOnlySession(session)

    monkeypatch.setattr(rawdev.session, "available_providers", lambda: ["CUDAExecutionProvider",
                                                                        "CPUExecutionProvider"])
    monkeypatch.setattr(rawdev.session, "_inference_session", fake)


def test_cuda_that_onnxruntime_gpu_cannot_load_is_refused_with_its_reason(gpu_build_without_cuda, dng, tmp_path,
                                                                          bilinear_model, capfd):
    result = CliRunner().invoke(app, ["develop", str(dng), "-o", str(tmp_path / "out"), "--device", "cuda",
                                      "--model", str(bilinear_model)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "CUDAExecutionProvider was requested but onnxruntime could not use it" in line
    assert "libcublasLt.so.13: cannot open shared object file" in line and "cuDNN 9.* and CUDA 13.*" in line
    assert "provider_bridge" not in capfd.readouterr().err  # onnxruntime's own report was folded into the line
    assert list((tmp_path / "out").glob("*")) == []


def test_auto_falls_back_to_the_cpu_where_cuda_cannot_be_loaded_and_says_why(gpu_build_without_cuda, dng,
                                                                            tmp_path, bilinear_model):
    result = CliRunner().invoke(app, ["develop", str(dng), "-o", str(tmp_path / "out"),
                                      "--model", str(bilinear_model)])
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("model ")]
    assert "on CPUExecutionProvider, fp32 (CUDA not usable here: libcublasLt.so.13" in line
    assert (tmp_path / "out" / "x.tif").is_file()


# --- without onnxruntime -------------------------------------------------------------------------

NO_ORT = "import sys\nsys.modules['onnxruntime'] = None  # import onnxruntime -> ModuleNotFoundError\n"


def test_without_onnxruntime_develop_says_which_extra_to_install_in_one_line(tmp_path):
    out = tmp_path / "out"
    run = _python(NO_ORT + "from rawdev.cli import app\napp(sys.argv[1:], prog_name='rawdev')\n",
                  "develop", str(CHART), "-o", str(out))
    assert run.returncode == 2, run.stderr
    assert run.stdout == "" and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line == ("error: onnxruntime is not installed: pip install 'rawdev[cpu]' "
                    "(or, for CUDA, pip install 'rawdev[gpu]' instead)")
    assert not out.exists()


def test_without_onnxruntime_each_command_that_runs_a_model_fails_in_one_line_and_info_says_so(tmp_path):
    commands = {
        "compare": ["compare", str(CHART), str(ROOT / "examples" / "chart_reference.png")],
        "convert-weights": ["convert-weights", str(tmp_path / "no-run"), "-o", str(tmp_path / "m.onnx")],
        "ray": ["develop", str(CHART), "-o", str(tmp_path / "ray"), "--ray", "auto"],
        "info": ["info"],
        "models": ["models", "list"],  # reads the contracts with onnx: no onnxruntime needed
    }
    code = NO_ORT + ("import json\nfrom typer.testing import CliRunner\nfrom rawdev.cli import app\n"
                     f"commands = {commands!r}\n"
                     "results = {k: CliRunner().invoke(app, v) for k, v in commands.items()}\n"
                     "print(json.dumps({k: [r.exit_code, r.output, repr(r.exception)] for k, r in results.items()}))\n")
    run = _python(code)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    for name in ("compare", "convert-weights", "ray"):
        exit_code, output, _ = got[name]
        assert exit_code == 2, (name, output)
        (line,) = output.strip().splitlines()
        assert line.startswith("error: onnxruntime is not installed: pip install 'rawdev[cpu]'"), (name, line)
    assert got["info"][0] == 0, got["info"]
    assert "missing: onnxruntime is not installed: pip install 'rawdev[cpu]'" in " ".join(got["info"][1].split())
    assert got["models"][0] == 0 and "csanet" in got["models"][1], got["models"]
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "ray").exists()


# --- both builds installed -----------------------------------------------------------------------


def _fake_build(site: Path, dist: str) -> None:
    """A distribution ``dist`` that installed an `onnxruntime` module into ``site`` (which fails to import)."""
    (site / "onnxruntime").mkdir(parents=True, exist_ok=True)
    (site / "onnxruntime" / "__init__.py").write_text("raise ImportError('half of it was uninstalled')\n")
    info = site / f"{dist.replace('-', '_')}-1.31.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.31.1\n")
    (info / "RECORD").write_text("onnxruntime/__init__.py,,\n")


PROBE = ("import json\nfrom rawdev.session import DeviceUnavailable, import_onnxruntime, installed_builds, "
         "provider_list\nout = {'builds': installed_builds()}\n"
         "for key, call in (('cuda', lambda: provider_list('cuda', ['CPUExecutionProvider'])), "
         "('import', import_onnxruntime)):\n"
         "    try:\n        call()\n    except DeviceUnavailable as exc:\n        out[key] = str(exc)\n"
         "print(json.dumps(out))\n")


def test_both_builds_in_one_folder_are_named_with_the_way_out(tmp_path):
    site = tmp_path / "site"
    _fake_build(site, "onnxruntime")
    _fake_build(site, "onnxruntime-gpu")
    run = _python(PROBE, path=[site])
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["builds"] == ["onnxruntime", "onnxruntime-gpu"]
    way_out = "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install 'rawdev[gpu]'"
    assert way_out in got["cuda"] and way_out in got["import"]
    assert "\n" not in got["cuda"] + got["import"]


def test_a_build_shadowed_by_another_folder_is_not_a_conflict(tmp_path):
    """onnxruntime-gpu installed with --target in front of a system's onnxruntime: Python imports the
    first, and only that one counts (the broken module is then reported as broken, not as two builds)."""
    front, back = tmp_path / "front", tmp_path / "back"
    _fake_build(front, "onnxruntime-gpu")
    _fake_build(back, "onnxruntime")
    run = _python(PROBE, path=[front, back])
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["builds"] == ["onnxruntime-gpu"]
    assert got["import"].startswith("onnxruntime cannot be imported (half of it was uninstalled): reinstall one")
    assert "pip install 'rawdev[gpu]' in a fresh venv" in got["cuda"]


def test_this_environment_has_exactly_one_build():
    assert len(installed_builds()) == 1 and installed_builds()[0] in BUILDS


# --- packaging: no install set resolves both builds ----------------------------------------------


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _asks_for(extras: set[str], project: dict) -> set[str]:
    """Distribution names that ``pip install '.[extras]'`` asks for directly: the base dependencies and
    each extra's, following the extras' references to rawdev's own extras."""
    optional = project["optional-dependencies"]
    names, todo, seen = set(), set(extras), set()
    for spec in project["dependencies"]:
        names.add(canonicalize_name(Requirement(spec).name))
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for spec in optional[extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == "rawdev":
                todo |= set(req.extras) - seen
            else:
                names.add(canonicalize_name(req.name))
    return names


def test_no_extra_asks_for_both_builds_and_the_base_for_neither():
    project = _pyproject()["project"]
    builds = set(BUILDS)
    assert not _asks_for(set(), project) & builds  # an extra can only add to the base: neither is there
    for extra in project["optional-dependencies"]:
        assert len(_asks_for({extra}, project) & builds) <= 1, extra
    assert _asks_for({"cpu"}, project) & builds == {"onnxruntime"}
    assert _asks_for({"gpu"}, project) & builds == {"onnxruntime-gpu"}
    assert _asks_for({"test"}, project) & builds == {"onnxruntime"}  # the README's test command has a runtime
    assert not _asks_for({"test-tools"}, project) & builds  # so '.[gpu,test-tools]' has one build
    for extra in ("train", "ray", "bench", "peers"):
        assert not _asks_for({extra}, project) & builds, extra


def _installed_requirements(name: str, extras: frozenset[str]) -> list[Requirement] | None:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    out = []
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            out.append(req)
    return out


def test_nothing_installed_that_rawdev_needs_beside_its_runtime_depends_on_onnxruntime():
    """The extras' own choice would be undone by a dependency that pulls in onnxruntime (the gpu extra
    would then install both): walk the installed dependency tree of everything rawdev asks for except
    the runtime extras, as pip would install it here."""
    project = _pyproject()["project"]
    extras = set(project["optional-dependencies"]) - {"cpu", "gpu", "test"}
    todo = [(n, frozenset()) for n in sorted(_asks_for(extras, project))]
    seen, walked, missing = set(), 0, []
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        requirements = _installed_requirements(name, wanted)
        if requirements is None:
            missing.append(name)  # not installed here (benchmarks/README.md's peers): not walked
            continue
        walked += 1
        for req in requirements:
            child = canonicalize_name(req.name)
            assert child not in BUILDS, f"{name} depends on {req}"
            todo.append((child, frozenset(req.extras)))
    assert walked > 20  # the walk did reach the installed tree


# --- benchmarks/cuda_check.py --------------------------------------------------------------------


@pytest.mark.skipif(CUDA_HERE, reason="CUDA is available here: the check would run for real")
def test_the_cuda_check_refuses_in_one_line_where_cuda_is_not_available(tmp_path):
    target = tmp_path / "cuda.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cuda_check.py"), "--json", str(target)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 2, run.stdout + run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("cuda_check: CUDA is not available here") and "pip install 'rawdev[gpu]'" in line
    assert not target.exists()
