"""Tenants: an API key sees only the sessions it created, everywhere a session can be seen or
touched (REST, previews, downloads, metrics, the CLI, the dashboard); an admin key sees all.

A real server with two tenant keys and one admin key; real SDK sessions, a client-side one among
them (its pixels never touch the server's disk, yet its preview does exist on the server).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import framecast

from . import test_dashboard as dashboard_tests
from .conftest import ServerProcess
from .media import patterns
from .test_cli import cli, ok
from .test_dashboard import Page

#: The dashboard tests' browser fixtures, shared.
browser = dashboard_tests.browser
browser_page = dashboard_tests.browser_page

KEY_A, KEY_B, ADMIN = "tenant-a-5d1e", "tenant-b-90c2", "operator-77aa"
SIZE = (48, 64)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"FRAMECAST_API_KEYS": f"{KEY_A},{KEY_B}", "FRAMECAST_ADMIN_KEYS": ADMIN}
    proc = ServerProcess(tmp_path_factory.mktemp("tenants") / "out", env=env)
    yield proc
    proc.stop()


def as_key(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


@pytest.fixture(scope="module")
def a_sessions(tenants: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Tenant A's sessions: a finished server file, and a client-side output still streaming with a
    preview made for it."""
    name = f"a/{uuid.uuid4().hex[:8]}.mkv"
    finished = framecast.StreamWriter(framecast.ServerFile(name), server=tenants.url, api_key=KEY_A)
    finished.add_video_stream(frame_rate=30, width=SIZE[1], height=SIZE[0])
    with finished.open():
        finished.write_video_chunk(0, patterns(10, *SIZE))
    local = tmp_path_factory.mktemp("client") / "a.mkv"
    live = framecast.StreamWriter(local, server=tenants.url, api_key=KEY_A)
    live.add_video_stream(frame_rate=30, width=SIZE[1], height=SIZE[0])
    live.open()
    try:
        with as_key(tenants, KEY_A) as a:
            # Looking at the session makes its encoder produce previews; keep feeding it until one is there.
            deadline = time.monotonic() + 30
            start = 0
            while a.get(f"/v1/sessions/{live.session_id}/preview").status_code != 200:
                assert time.monotonic() < deadline, "no preview within 30 s"
                live.write_video_chunk(0, patterns(3, *SIZE, start=start))
                live.flush()
                start += 3
                time.sleep(0.1)
        yield {"finished": finished.session_id, "live": live.session_id, "path": name}
    finally:
        live.close()


def not_found_body(client: httpx.Client, method: str, path: str) -> tuple[int, dict[str, Any]]:
    response = client.request(method, path)
    return response.status_code, response.json()


def test_another_tenants_session_is_a_404_like_a_missing_one(tenants, a_sessions):
    with as_key(tenants, KEY_B) as b:
        for sid in (a_sessions["finished"], a_sessions["live"]):
            missing = "0" * len(sid)
            for method, suffix in [("GET", ""), ("GET", "/preview"), ("GET", "/output"), ("DELETE", "")]:
                theirs = not_found_body(b, method, f"/v1/sessions/{sid}{suffix}")
                nobodys = not_found_body(b, method, f"/v1/sessions/{missing}{suffix}")
                assert theirs[0] == nobodys[0] == 404, (method, suffix, theirs)
                # The same answer, but for the id it names.
                assert json.dumps(theirs[1]).replace(sid, missing) == json.dumps(nobodys[1]), (method, suffix)
        listed = b.get("/v1/sessions").json()
        assert not {a_sessions["finished"], a_sessions["live"]} & {s["id"] for s in listed}
    with as_key(tenants, KEY_A) as a:
        # B's DELETE did nothing: A's live session still streams, its output is still there.
        assert a.get(f"/v1/sessions/{a_sessions['live']}").json()["state"] == "streaming"
        assert a.get(f"/v1/sessions/{a_sessions['finished']}/output").status_code == 200
        assert a.get(f"/v1/sessions/{a_sessions['live']}/preview").headers["content-type"] == "image/jpeg"
        mine = {s["id"] for s in a.get("/v1/sessions").json()}
        assert {a_sessions["finished"], a_sessions["live"]} <= mine


def test_each_tenant_lists_only_its_own_and_the_admin_sees_all(tenants, a_sessions):
    writer = framecast.StreamWriter(framecast.Discard(), server=tenants.url, api_key=KEY_B)
    writer.add_video_stream(frame_rate=30, width=SIZE[1], height=SIZE[0])
    with writer.open():
        writer.write_video_chunk(0, patterns(2, *SIZE))
    with as_key(tenants, KEY_B) as b, as_key(tenants, KEY_A) as a, as_key(tenants, ADMIN) as admin:
        b_ids = {s["id"] for s in b.get("/v1/sessions").json()}
        a_ids = {s["id"] for s in a.get("/v1/sessions").json()}
        all_ids = {s["id"] for s in admin.get("/v1/sessions").json()}
        assert b_ids == {writer.session_id}
        assert writer.session_id not in a_ids
        assert a_ids | b_ids <= all_ids
        owners = {s["owner"] for s in admin.get("/v1/sessions").json()}
        assert len(owners) == 2 and None not in owners  # fingerprints, never keys
        assert not {KEY_A, KEY_B} & owners
        # The admin acts on any tenant's session.
        assert admin.get(f"/v1/sessions/{a_sessions['live']}/preview").status_code == 200
        assert admin.get(f"/v1/sessions/{a_sessions['finished']}/output").status_code == 200
        assert admin.get(f"/v1/sessions/{writer.session_id}").json()["state"] == "closed"


def test_metrics_name_sessions_only_to_admins(tenants, a_sessions):
    with as_key(tenants, KEY_B) as b, as_key(tenants, ADMIN) as admin:
        tenant_view = b.get("/metrics").text
        operator_view = admin.get("/metrics").text
    assert "framecast_sessions{" in tenant_view and "framecast_chunks_in_total" in tenant_view
    assert a_sessions["live"] not in tenant_view and 'session="' not in tenant_view
    assert f'framecast_session_queue_chunks{{session="{a_sessions["live"]}"}}' in operator_view


def test_the_cli_shows_a_key_its_own_sessions(tenants, a_sessions):
    b_table = ok(cli("sessions", "list", "--api-key", KEY_B, server=tenants.url))
    assert a_sessions["live"] not in b_table and a_sessions["finished"] not in b_table
    a_table = ok(cli("sessions", "list", "--api-key", KEY_A, server=tenants.url))
    assert a_sessions["live"] in a_table and "OWNER" not in a_table.splitlines()[0]
    admin_table = ok(cli("sessions", "list", "--api-key", ADMIN, server=tenants.url))
    assert admin_table.splitlines()[0].split()[:2] == ["ID", "OWNER"]
    assert a_sessions["live"] in admin_table
    refused = cli("sessions", "show", a_sessions["live"], "--api-key", KEY_B, server=tenants.url)
    assert refused.returncode != 0 and "no session with id" in refused.stderr


def test_the_dashboard_shows_a_key_its_own_sessions(tenants, a_sessions, browser_page: Page):
    page = browser_page.page
    page.goto(tenants.url + "/")
    page.locator("#key-form").wait_for(state="visible")
    page.fill("#api-key", KEY_B)
    with page.expect_response(lambda r: r.url.endswith("/v1/sessions") and r.status == 200):
        page.click("#key-submit")
    page.locator("#key-form").wait_for(state="hidden")
    assert page.locator(f'[data-session-id="{a_sessions["live"]}"]').count() == 0
    assert page.locator(f'[data-session-id="{a_sessions["finished"]}"]').count() == 0
    page.evaluate("sessionStorage.removeItem('framecast.apiKey')")
    page.reload()
    page.locator("#key-form").wait_for(state="visible")
    page.fill("#api-key", KEY_A)
    page.click("#key-submit")
    page.locator(f'[data-session-id="{a_sessions["live"]}"]').wait_for(state="visible")
    assert browser_page.errors == []


def test_the_sdk_reports_another_tenants_session_as_not_found(tenants, a_sessions):
    client = framecast.rest.RestClient(tenants.url, KEY_B)
    try:
        with pytest.raises(framecast.errors.SessionNotFound):
            client.request("GET", f"/v1/sessions/{a_sessions['finished']}")
        with pytest.raises(framecast.errors.SessionNotFound), open(os.devnull, "wb") as sink:
            client.download(f"/v1/sessions/{a_sessions['finished']}/output", sink)
    finally:
        client.close()
