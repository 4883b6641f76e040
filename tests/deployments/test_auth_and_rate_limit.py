"""API keys and application-wide rate limits, over HTTP with two ingress replicas."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from common.settings import Settings, SettingsError, hash_api_key
from deployments.auth import key_matches
from deployments.rate_limit import client_address
from tests.conftest import (
    AUTH_FAILURES_PER_MINUTE,
    RATE_LIMIT_PER_MINUTE,
    deployment,
    next_api_key,
    next_client_address,
)
from tests.images import image_bytes

pytestmark = pytest.mark.serve

OPEN_PATHS = ["/health", "/healthz", "/metrics", "/docs", "/openapi.json", "/", "/static/app.js"]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong-key"}, {"X-API-Key": ""}],
                         ids=["missing", "wrong", "empty"])  # fmt: skip
def test_predict_without_a_valid_key_is_401_with_a_challenge(served_app, headers):
    response = httpx.post(
        f"{served_app.url}/predict", files={"file": ("a.jpg", image_bytes(0))}, headers=headers
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "ApiKey"
    body = response.json()
    assert body["error"] == "unauthorized" and body["status_code"] == 401
    assert "wrong-key" not in response.text


@pytest.mark.parametrize("path", ["/predict/batch", "/predict/explain", "/predict/compare"])
def test_every_prediction_route_needs_the_key(served_app, path):
    response = httpx.post(f"{served_app.url}{path}", files={"file": ("a.jpg", image_bytes(0))})
    assert response.status_code == 401


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_health_metrics_docs_and_page_stay_open(served_app, path):
    assert httpx.get(f"{served_app.url}{path}", timeout=30).status_code == 200


def test_a_key_gets_exactly_its_limit_across_replicas_and_another_key_still_passes(
    served_app, api_key
):
    """Two ingress replicas, one key: exactly RATE_LIMIT_PER_MINUTE requests pass, sent at
    once over both replicas; the next one is 429, while a second key is still served."""
    assert deployment(served_app.config, "Ingress")["num_replicas"] == 2
    data = image_bytes(6)

    def send(key):
        with httpx.Client(base_url=served_app.url, headers={"X-API-Key": key}, timeout=60) as c:
            return c.post("/predict", files={"file": ("r.jpg", data)})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, [api_key] * RATE_LIMIT_PER_MINUTE))
    assert [r.status_code for r in responses] == [200] * RATE_LIMIT_PER_MINUTE

    limited = send(api_key)
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert send(next_api_key()).status_code == 200


def test_wrong_keys_are_limited_per_address_and_valid_keys_keep_working(served_app, api_key):
    address = next_client_address()
    url = f"{served_app.url}/predict"
    files = {"file": ("a.jpg", image_bytes(0))}
    guesses = [
        httpx.post(
            url, files=files, headers={"X-API-Key": f"guess-{i}", "X-Forwarded-For": address}
        )
        for i in range(AUTH_FAILURES_PER_MINUTE + 3)
    ]
    statuses = [r.status_code for r in guesses]
    assert statuses == [401] * AUTH_FAILURES_PER_MINUTE + [429] * 3
    limited = guesses[-1]
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert limited.json() == {
        "error": "rate_limited",
        "detail": f"more than {AUTH_FAILURES_PER_MINUTE} failed authentications a minute from "
        f"this address; retry in {retry_after} s",
        "request_id": limited.headers["x-request-id"],
        "status_code": 429,
    }
    # a missing key counts as a failure too, and is limited the same way
    assert httpx.post(url, files=files, headers={"X-Forwarded-For": address}).status_code == 429
    # a valid key from the limited address is never refused by the failure limit
    valid = httpx.post(url, files=files, headers={"X-API-Key": api_key, "X-Forwarded-For": address})
    assert valid.status_code == 200
    # another address still gets its 401s
    other = httpx.post(
        url, files=files, headers={"X-API-Key": "guess", "X-Forwarded-For": next_client_address()}
    )
    assert other.status_code == 401


def test_forwarded_for_from_an_untrusted_peer_does_not_pick_the_address():
    # only TRUSTED_PROXIES may name the client: a guesser cannot rotate X-Forwarded-For
    scope = {
        "type": "http",
        "client": ("203.0.113.7", 1),
        "headers": [(b"x-forwarded-for", b"1.2.3.4")],
    }
    assert client_address(scope, frozenset({"127.0.0.1"})) == "203.0.113.7"


def test_the_failure_limit_stays_on_when_the_per_key_limit_is_off():
    settings = Settings.from_env({"RATE_LIMIT_PER_MINUTE": "0"})
    assert settings.rate_limit_per_minute == 0
    assert settings.auth_failures_per_minute == 20
    assert Settings.from_env({"AUTH_FAILURES_PER_MINUTE": "0"}).auth_failures_per_minute == 0


def test_trusted_proxies_must_be_addresses_or_ranges():
    assert Settings.from_env({"TRUSTED_PROXIES": "10.0.0.2, 35.191.0.0/16"}).trusted_proxies == {
        "10.0.0.2",
        "35.191.0.0/16",
    }
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        Settings.from_env({"TRUSTED_PROXIES": "haproxy.local"})


def test_keys_compare_by_digest():
    hashes = frozenset({hash_api_key("alpha"), hash_api_key("beta")})
    assert key_matches("beta", hashes)
    assert not key_matches("gamma", hashes)
    assert not key_matches("", hashes)


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.9", "198.51.100.1", frozenset(), "203.0.113.9"),  # untrusted peer: ignored
        ("10.0.0.2", "198.51.100.1", frozenset({"10.0.0.2"}), "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1, 10.0.0.3", frozenset({"10.0.0.2", "10.0.0.3"}),
         "198.51.100.1"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.1", frozenset({"10.0.0.2"}), "198.51.100.1"),
        ("10.0.0.2", "", frozenset({"10.0.0.2"}), "10.0.0.2"),
        ("35.191.7.8", "198.51.100.1, 130.211.0.9", frozenset({"35.191.0.0/16", "130.211.0.0/22"}),
         "198.51.100.1"),  # a load balancer's proxies as CIDR ranges
        ("35.192.0.1", "198.51.100.1", frozenset({"35.191.0.0/16"}), "35.192.0.1"),
    ],
)  # fmt: skip
def test_forwarded_for_is_believed_only_from_trusted_proxies(peer, forwarded, trusted, expected):
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "client": (peer, 1234), "headers": headers}
    assert client_address(scope, trusted) == expected
