"""Hub folders: `detok export` writes one, `hf:ORG/NAME[@REV]` loads it from huggingface_hub's cache, and
`--push-to-hub` uploads it through huggingface_hub's own calls (issue 38 item 5).

No test reaches the network. huggingface_hub talks HTTP through one client whose factory it lets callers replace
(`set_client_factory`); here that client answers from a dict, as the Hub's API would. So huggingface_hub's own code
downloads the exported files and lays out the cache (blobs, snapshots, refs), and the loading tests then run with
HF_HUB_OFFLINE=1 against that cache, with a client that fails any request. The upload runs huggingface_hub's
`create_repo` and `upload_folder` down to the HTTP requests, whose bodies are checked; what is not covered is the real
server: authentication, and the LFS/Xet transfer of large files (the fake server asks for every file inline).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("huggingface_hub")
try:  # huggingface_hub's HTTP client library: httpx2 from its 2.x on, httpx in 1.x
    import httpx2
except ImportError:
    httpx2 = pytest.importorskip("httpx")
import huggingface_hub  # noqa: E402
from huggingface_hub import constants  # noqa: E402
from huggingface_hub.utils import _http  # noqa: E402  (its default client: set back after each test)

from detok import load_generator, load_tokenizer  # noqa: E402
from detok.checkpoint import resolve_model_folder  # noqa: E402
from detok.cli import main as cli_main  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny tokenizer trained two steps, its latent statistics, a reconstruction eval, and a bench step's record."""
    tmp = tmp_path_factory.mktemp("hub")
    rng = np.random.default_rng(0)
    npz = tmp / "d.npz"
    np.savez(npz, images=rng.integers(0, 256, (16, 32, 32), dtype=np.uint8), labels=rng.integers(0, 4, 16))
    run = tmp / "run"
    sets = ["data.name=npz", f"data.root={npz}", "train.threads=1", "train.images=16", "train.batch_size=8",
            "train.sample_every=1000", "train.progress=false"]  # fmt: skip
    argv = ["tokenizer", "train", "--preset", "detok-fmnist32-tiny", "--out", str(run)]
    assert cli_main(argv + [a for s in sets for a in ("--set", s)]) == 0
    assert cli_main(["tokenizer", "stats", str(run), "--max-images", "16"]) == 0
    assert cli_main(["tokenizer", "eval", str(run), "--split", "train", "--lpips", "off", "--evaluator", "none"]) == 0
    done = {"spec": {"preset": "detok-fmnist32-tiny", "overrides": ["train.images=16"]}, "commit": "abc1234"}
    (run / "done.json").write_text(json.dumps(done))
    return run


def test_export_writes_a_hub_folder(trained_run, tmp_path, capsys):
    out = tmp_path / "tok"
    assert cli_main(["export", str(trained_run), "--out", str(out), "--name", "org/tok", "--regime", "short"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "metrics.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == (trained_run / "model.safetensors").read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config == json.loads((trained_run / "config.json").read_text())
    assert config["model"]["latent_mean"] is not None  # the latent statistics travel in config.json

    card = (out / "README.md").read_text()
    meta = huggingface_hub.ModelCard(card).data  # the card's YAML header as huggingface_hub reads it
    assert meta.library_name == "detok" and meta.license == "mit"
    assert {"detok", "image-tokenizer", "detok-fmnist32-tiny"} <= set(meta.tags)
    assert 'detok.load_tokenizer("hf:org/tok")' in card and "pip install 'detok[hub]'" in card

    metrics = json.loads((out / "metrics.json").read_text())
    recorded = json.loads((trained_run / "eval-train.json").read_text())
    assert metrics["regime"] == "short" and metrics["reconstruction"]["train"]["psnr"] == recorded["psnr"]
    assert metrics["reconstruction"]["train"]["evaluator"] is None  # --evaluator none: no rFID, said so
    assert metrics["trained_by"]["commit"] == "abc1234"
    assert metrics["trained_by"]["bench_step"]["preset"] == "detok-fmnist32-tiny"
    assert "Regime: short." in card and "`abc1234`" in card and "command: not recorded" in card

    assert cli_main(["export", str(trained_run), "--out", str(out)]) == 2  # never overwrites
    assert "exists and is not empty" in capsys.readouterr().err
    assert cli_main(["export", str(trained_run), "--out", str(tmp_path / "x"), "--tokenizer", "hf:org/tok"]) == 2
    assert "applies to generators" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# A fake Hub behind huggingface_hub's HTTP client
# --------------------------------------------------------------------------------------------------


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """The few Hub endpoints huggingface_hub's snapshot_download, create_repo and upload_folder call."""

    def __init__(self, repo: str, files: dict[str, bytes]):
        self.repo, self.files, self.requests, self.commits, self.created, self.cards = repo, files, [], [], [], []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path, body = request.url.path, request.read()
        self.requests.append((request.method, path))
        api = f"/api/models/{self.repo}"
        if path.startswith(f"{api}/revision/"):
            siblings = [{"rfilename": f} for f in self.files]
            return httpx2.Response(200, json={"id": self.repo, "sha": COMMIT, "siblings": siblings})
        if path.startswith(f"{api}/tree/"):
            tree = [{"type": "file", "path": f, "size": len(b), "oid": _git_blob_id(b)} for f, b in self.files.items()]
            return httpx2.Response(200, json=tree)
        if path.startswith(f"/{self.repo}/resolve/"):
            name = path.split("/resolve/", 1)[1].split("/", 1)[1]
            data = self.files[name]
            headers = {"x-repo-commit": COMMIT, "etag": f'"{_git_blob_id(data)}"', "content-length": str(len(data))}
            return httpx2.Response(200, headers=headers, content=data if request.method == "GET" else b"")
        if path == "/api/repos/create":
            self.created.append(json.loads(body))
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{self.repo}", "name": self.repo})
        if path == "/api/validate-yaml":  # the card's metadata, parsed as huggingface_hub parses it
            self.cards.append(huggingface_hub.ModelCard(json.loads(body)["content"]).data.to_dict())
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if path.startswith(f"{api}/preupload/"):
            files = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in json.loads(body)["files"]
            ]
            return httpx2.Response(200, json={"files": files})
        if path.startswith(f"{api}/commit/"):
            self.commits.append([json.loads(line) for line in body.decode().splitlines() if line])
            url = f"https://huggingface.co/{self.repo}/commit/{'f' * 40}"
            return httpx2.Response(200, json={"commitUrl": url, "commitOid": "f" * 40, "pullRequestUrl": None})
        return httpx2.Response(404, json={"error": f"no fake endpoint for {request.method} {path}"})


def _no_network(request: httpx2.Request) -> httpx2.Response:
    raise AssertionError(f"offline, yet huggingface_hub sent {request.method} {request.url}")


@pytest.fixture
def hub_client(monkeypatch, tmp_path):
    """Route huggingface_hub's HTTP through a handler; a fresh cache under tmp_path. Returns a setter (handler,
    offline)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token")

    def use(handler, offline: bool = False) -> None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        huggingface_hub.set_client_factory(
            lambda: httpx2.Client(  # huggingface_hub's own client (its hook refuses requests when offline), faked wire
                event_hooks={"request": [_http.hf_request_event_hook]},
                follow_redirects=True,
                transport=httpx2.MockTransport(handler),
            )
        )

    yield use
    huggingface_hub.set_client_factory(_http.default_client_factory)


def test_hf_spec_loads_from_the_hub_cache_offline(trained_run, tmp_path, hub_client):
    out = tmp_path / "tok"
    assert cli_main(["export", str(trained_run), "--out", str(out), "--name", "org/tok"]) == 0
    hub = FakeHub("org/tok", {p.name: p.read_bytes() for p in out.iterdir()})
    hub_client(hub)
    snapshot = huggingface_hub.snapshot_download("org/tok")  # huggingface_hub's code writes the cache
    cached = huggingface_hub.scan_cache_dir(constants.HF_HUB_CACHE)
    (repo,) = cached.repos
    assert repo.repo_id == "org/tok" and {r.commit_hash for r in repo.revisions} == {COMMIT}
    assert (tmp_path / "hf-cache" / "models--org--tok" / "refs" / "main").read_text() == COMMIT

    hub_client(_no_network, offline=True)  # from here on any request fails the test
    assert resolve_model_folder("hf:org/tok") == resolve_model_folder(f"hf:org/tok@{COMMIT}") == type(out)(snapshot)
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    local, remote = load_tokenizer(trained_run), load_tokenizer("hf:org/tok")
    torch.testing.assert_close(remote.encode(images, normalize=True), local.encode(images, normalize=True))
    torch.testing.assert_close(remote.decode(local.encode(images)), local.decode(local.encode(images)))
    with pytest.raises(ValueError, match="not a generator"):  # generators resolve the same way
        load_generator(f"hf:org/tok@{COMMIT}")
    with pytest.raises(FileNotFoundError, match="hf:org/other"):  # not in the cache, and offline
        load_tokenizer("hf:org/other")


def test_hf_spec_errors_name_the_spec_and_the_extra(monkeypatch, tmp_path):
    for bad in ("hf:noslash", "hf:a/b/c", "hf:org/name@"):
        with pytest.raises(ValueError, match="hf:ORG/NAME"):
            resolve_model_folder(bad)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if the hub extra were not installed
    with pytest.raises(ImportError, match=r"pip install 'detok\[hub\]'"):
        load_tokenizer("hf:org/tok")
    assert cli_main(["generator", "sample", "hf:org/sit", "--num", "2", "--out", str(tmp_path / "s.npz")]) == 2


def test_push_to_hub_goes_through_huggingface_hubs_upload(trained_run, tmp_path, hub_client):
    hub = FakeHub("org/tok", {})
    hub_client(hub)
    out = tmp_path / "tok"
    assert cli_main(["export", str(trained_run), "--out", str(out), "--push-to-hub", "org/tok", "--private"]) == 0
    (created,) = hub.created
    assert (created["organization"], created["name"]) == ("org", "tok")
    assert created.get("visibility") == "private" or created.get("private") is True
    (commit,) = hub.commits
    header, *files = commit
    assert header["key"] == "header" and header["value"]["summary"].startswith("detok export")
    sent = {f["value"]["path"]: base64.b64decode(f["value"]["content"]) for f in files if f["key"] == "file"}
    assert sent == {p.name: p.read_bytes() for p in out.iterdir()}
    assert "# org/tok" in sent["README.md"].decode()
    assert [c["library_name"] for c in hub.cards] == ["detok"]
