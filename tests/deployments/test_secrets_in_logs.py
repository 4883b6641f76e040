"""API keys never reach Ray's logs: after a run of the served application with auth on (keys
given as API_KEY_HASHES_FILE, as the RayService mounts them), no file under the test Ray
instance's session logs holds a plain key."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from tests.conftest import TEST_KEYS
from tests.images import image_bytes

pytestmark = pytest.mark.serve


def _session_logs() -> Path:
    """The logs folder of this test session's own Ray instance (not /tmp/ray/session_latest,
    which may be another engineer's)."""
    return Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"


def test_no_plain_api_key_in_the_session_logs_after_authenticated_requests(client, api_key):
    unauthenticated = client.post(
        "/predict", files={"file": ("a.jpg", image_bytes(1))}, headers={"X-API-Key": ""}
    )
    assert unauthenticated.status_code == 401  # auth is on
    answered = client.post("/predict", files={"file": ("a.jpg", image_bytes(1))})
    assert answered.status_code == 200  # with the fixture's key, read from the digest file
    wrong = client.post(
        "/predict", files={"file": ("a.jpg", image_bytes(1))}, headers={"X-API-Key": "not-a-key"}
    )
    assert wrong.status_code == 401

    logs = [p for p in _session_logs().rglob("*") if p.is_file()]
    assert any("replica_" in p.name for p in logs), "no replica logs: not the serving instance"
    keys = [key.encode() for key in TEST_KEYS] + [b"not-a-key"]
    leaked = sorted(
        {
            (str(p.relative_to(_session_logs())), k.decode())
            for p in logs
            for k in keys
            if k in p.read_bytes()
        }
    )
    assert leaked == []
