"""The package installs from a built wheel and runs from it alone (issue 38 item 4).

The wheel is built from a copy of the source (pyproject.toml, README.md, src/) so that the build leaves nothing in
the checkout, installed with `pip install --no-deps --no-index` into a fresh virtual environment whose only other
import path is the dependencies' site-packages (torch and the rest, already installed: nothing is downloaded), and
run from an empty folder. The editable install's `.pth` in that site-packages is not read (a path listed in a `.pth`
file is added as it is; the `.pth` files inside it are not processed), so `import detok` can only find the wheel's
copy; the test checks that it did.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVALUATOR_FILES = {
    f"detok/eval/weights/{name}/{f}"
    for name in ("reference-fmnist32", "reference-resnet-fmnist32")
    for f in ("config.json", "model.safetensors")
}

# Run inside the fresh environment: the shipped evaluator, read from the installed package, scores 64 seeded noise
# images against statistics of 64 others (written as an ADM-format .npz for `detok eval samples --ref-stats`).
SCORE_SCRIPT = """
import json, sys
import numpy as np
import detok
from detok.eval.features import SHIPPED_REFERENCE, build_extractor, extract, feature_stats
ext = build_extractor("reference")
rng = np.random.default_rng(0)
ref = rng.integers(0, 256, (64, 32, 32, 1), dtype=np.uint8)
feats, _ = extract(ext, ref, 64, False)
mu, sigma = feature_stats(feats)
np.savez("ref.npz", mu=mu, sigma=sigma)
np.savez("samples.npz", images=rng.integers(0, 256, (64, 32, 32, 1), dtype=np.uint8), labels=np.arange(64) % 10)
print(json.dumps({"detok": detok.__file__, "weights": str(SHIPPED_REFERENCE), "evaluator": ext.name}))
"""


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*cmd, "-q", "-w", str(out)], check=True, cwd=tmp, capture_output=True, text=True)
    (wheel,) = out.glob("detok-*.whl")
    return wheel


def test_wheel_installs_and_runs_without_the_source_tree(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert EVALUATOR_FILES <= names, f"shipped evaluator weights missing from the wheel: {EVALUATOR_FILES - names}"
    assert not any(n.startswith(("tests/", "docs/", "src/")) for n in names)

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    env_site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    deps = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}  # torch, numpy, safetensors, tqdm, pillow
    (env_site / "zz-detok-deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, text=True)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(DETOK_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PATH=f"{bindir}{os.pathsep}{env['PATH']}")

    def run(*cmd: str) -> str:
        r = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    detok = str(bindir / "detok")
    assert run(detok, "--version").strip().startswith("detok ")
    presets = run(detok, "presets")
    assert "detok-fmnist32" in presets and "sit-fmnist32" in presets

    where = json.loads(run(str(python), "-c", SCORE_SCRIPT).strip().splitlines()[-1])
    for key in ("detok", "weights"):  # the package and its data files come from the wheel, not the checkout
        assert Path(where[key]).resolve().is_relative_to(env_site.resolve()), where
        assert not Path(where[key]).resolve().is_relative_to(ROOT), where
    assert where["evaluator"].startswith("reference-")

    record = json.loads(run(detok, "eval", "samples", "samples.npz", "--ref-stats", "ref.npz", "--out", "s.json"))
    assert record["evaluator"] == where["evaluator"] and record["reference"] == "adm:ref.npz"
    assert record["fid"] >= 0 and 0 <= record["class_consistency"] <= 1
    assert json.loads((work / "s.json").read_text()) == record
