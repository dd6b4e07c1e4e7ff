"""The app in-process: ``create_app(Settings(...))`` behind Starlette's TestClient, no server
process, no sockets. Routing, auth, and how each domain error maps to its status and body
(400/401/404/409/421/422/503); the end-to-end tests cover the same routes against `framecast serve`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from framecast_server.api.app import create_app
from framecast_server.config import Settings

VIDEO = {"type": "video", "frame_rate": 30, "width": 64, "height": 48}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        output_dir=Path(tmp_path_factory.mktemp("app")),
        api_keys=["k-one", "k-two"],
        admin_keys=["k-admin"],
        max_sessions_per_key=1,
        spare_encoders=0,
    )
    # TestClient's requests name the host "testserver": keys are set, so the Host check is off.
    with TestClient(create_app(settings), base_url="http://testserver") as test_client:
        yield test_client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    return body


def test_routes_need_a_key_but_healthz_does_not(client):
    assert client.get("/healthz").status_code == 200
    for method, path in [
        ("GET", "/v1/sessions"),
        ("GET", "/v1/capabilities"),
        ("GET", "/metrics"),
        ("DELETE", "/v1/sessions/x"),
    ]:
        response = client.request(method, path, headers=auth("wrong"))
        error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


def test_bodies_that_are_not_configs_are_400_and_bad_configs_422(client):
    error(
        client.post(
            "/v1/sessions", content=b"{not json", headers={**auth("k-one"), "content-type": "application/json"}
        ),
        400,
        "bad_request",
    )
    error(
        client.post("/v1/sessions", content=b"", headers={**auth("k-one"), "content-type": "application/json"}),
        400,
        "bad_request",
    )
    body = error(
        client.post(
            "/v1/sessions",
            headers=auth("k-one"),
            json={"destination": {"type": "server_file", "path": "a.mkv"}, "streams": [{**VIDEO, "width": "wide"}]},
        ),
        422,
        "invalid_config",
    )
    assert body["field"] == "streams.0.width"
    body = error(
        client.post(
            "/v1/sessions",
            headers=auth("k-one"),
            json={"destination": {"type": "server_file", "path": "../a.mkv"}, "streams": [VIDEO]},
        ),
        422,
        "invalid_config",
    )
    assert body["field"] == "destination.path"


def test_sessions_404_409_503_and_tenants(client):
    created = client.post(
        "/v1/sessions",
        headers=auth("k-one"),
        json={"destination": {"type": "server_file", "path": "app/one.mkv"}, "streams": [VIDEO]},
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    try:
        # Still open: no download yet.
        error(client.get(f"/v1/sessions/{sid}/output", headers=auth("k-one")), 409, "state_conflict")
        # Another key: as if it did not exist; the admin sees it.
        error(client.get(f"/v1/sessions/{sid}", headers=auth("k-two")), 404, "session_not_found")
        assert client.get(f"/v1/sessions/{sid}", headers=auth("k-admin")).json()["state"] == "created"
        # One session per key here.
        error(
            client.post(
                "/v1/sessions", headers=auth("k-one"), json={"destination": {"type": "discard"}, "streams": [VIDEO]}
            ),
            503,
            "too_many_sessions",
        )
        error(client.get(f"/v1/sessions/{sid}/preview", headers=auth("k-one")), 404, "preview_not_found")
    finally:
        closed = client.delete(f"/v1/sessions/{sid}", headers=auth("k-one"))
    assert closed.json()["state"] == "closed"
    assert client.get(f"/v1/sessions/{sid}/output", headers=auth("k-one")).status_code == 200
    error(client.get("/v1/sessions/nope", headers=auth("k-one")), 404, "session_not_found")
    error(client.get("/v1/nothing-here", headers=auth("k-one")), 404, "not_found")


def test_a_keyless_server_answers_only_its_own_host_names(tmp_path):
    settings = Settings(output_dir=tmp_path, spare_encoders=0)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as local:
        assert local.get("/healthz").status_code == 200
        assert local.get("/v1/sessions", headers={"Host": "localhost:8000"}).status_code == 200
        error(local.get("/v1/sessions", headers={"Host": "rebound.example"}), 421, "misdirected_request")
