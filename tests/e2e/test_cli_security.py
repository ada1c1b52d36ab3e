"""``shigoto audit``, ``shigoto keys`` and ``--actor``, run as a user runs them; the CLI
shows encrypted fields as «encrypted», never their ciphertext or plaintext."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shigoto import App
from shigoto.security import KeyRing

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "shigoto.cli.main"]
SECRET = "hidden.person@example.com"


def shigoto(*args: str, url: str, keys: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHIGOTO_URL", "SHIGOTO_ACTOR")}
    env["SHIGOTO_URL"] = url
    if keys is not None:
        env["SHIGOTO_ENCRYPTION_KEYS"] = keys
    return subprocess.run(
        [*CLI, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def enqueue_encrypted(url: str, keys: str) -> str:
    async def main() -> str:
        app = App(url)
        app.security.keys = KeyRing.parse(keys)
        try:
            with app.actor("alice"):
                job = await app.queue("mail").add(
                    "notify", {"user_id": 1, "email": SECRET}, encrypt=["email"]
                )
            return job.id
        finally:
            await app.close()

    return asyncio.run(main())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_keys_generate_prints_a_usable_key() -> None:
    proc = subprocess.run([*CLI, "keys", "generate"], capture_output=True, text=True, check=True)
    ring = KeyRing.parse(proc.stdout.strip())
    assert ring.primary is not None


def test_jobs_show_and_audit_and_rotation(url: str) -> None:
    old = subprocess.run([*CLI, "keys", "generate"], capture_output=True, text=True).stdout.strip()
    new = subprocess.run([*CLI, "keys", "generate"], capture_output=True, text=True).stdout.strip()
    job_id = enqueue_encrypted(url, old)

    shown = shigoto("jobs", "show", job_id, url=url)
    assert shown.returncode == 0, shown.stderr
    assert "«encrypted»" in shown.stdout
    assert SECRET not in shown.stdout and "v1:" not in shown.stdout
    as_json = json.loads(shigoto("jobs", "show", job_id, "--json", url=url).stdout)
    assert as_json["data"] == {"user_id": 1, "email": "«encrypted»"}

    rotated = shigoto("--actor", "ops-team", "keys", "rotate", url=url, keys=f"{new},{old}")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1 job(s)" in rotated.stdout

    trail = shigoto("audit", "--job", job_id, "--json", url=url)
    assert trail.returncode == 0, trail.stderr
    entries = [json.loads(line) for line in trail.stdout.splitlines()]
    actions = [(e["actor"], e["action"]) for e in reversed(entries)]
    assert actions[0] == ("alice", "enqueue")
    assert actions == [("alice", "enqueue")]
    rotation = shigoto("audit", "--actor", "ops-team", url=url)
    assert "keys.rotate" in rotation.stdout
    table = shigoto("audit", "--since", "1h", url=url)
    assert "alice" in table.stdout and "enqueue" in table.stdout

    bad = shigoto("audit", "--since", "yesterday-ish", url=url)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
