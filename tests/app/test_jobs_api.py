"""The jobs API: submission, idempotency, listing, cancel, events, tenant isolation, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from slimforge.app.settings import Settings
from tests.builders import SMOLLM2_HUB, job_body


def body(files: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    """A Hub model (not read at submit) with the server's default text budgets."""
    return job_body(
        SMOLLM2_HUB,
        files["calibration"],
        files["evaluation"],
        calibration_tokens=None,
        seq_len=None,
        **overrides,
    )


def test_submit_returns_202_location_and_defaults(api: TestClient, auth, text_files) -> None:
    r = api.post("/v1/jobs", json=body(text_files, metadata={"team": "ml"}), headers=auth())
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["method"] == "svd"
    assert job["metadata"] == {"team": "ml"}
    # Every field not given gets its default, visible in the stored request.
    assert job["request"]["method"]["whitening"] is True
    assert job["request"]["calibration"]["seq_len"] == 512
    assert api.get(r.headers["location"], headers=auth("other")).status_code == 404


def test_relative_local_paths_resolve_against_first_root(
    api: TestClient, auth, text_files, settings: Settings
) -> None:
    spec = body(text_files, calibration={"path": "calib.txt"})
    r = api.post("/v1/jobs", json=spec, headers=auth())
    assert r.status_code == 202, r.text
    assert r.json()["request"]["calibration"]["path"] == str(text_files["calibration"])


def test_idempotency_key_replays_or_conflicts(api: TestClient, auth, text_files) -> None:
    h = {**auth(), "Idempotency-Key": "release-1.2"}
    first = api.post("/v1/jobs", json=body(text_files), headers=h)
    again = api.post("/v1/jobs", json=body(text_files), headers=h)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = api.post("/v1/jobs", json=body(text_files, target={"ratio": 0.7}), headers=h)
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["error"]["message"]
    listed = api.get("/v1/jobs", headers=h).json()["items"]
    assert len(listed) == 1


def test_list_paginates_newest_first_and_filters(api: TestClient, auth, text_files) -> None:
    h = auth()
    ids = [api.post("/v1/jobs", json=body(text_files), headers=h).json()["id"] for _ in range(5)]
    api.post(f"/v1/jobs/{ids[0]}/cancel", headers=h)
    seen: list[str] = []
    url = "/v1/jobs?limit=2"
    while True:
        page = api.get(url, headers=h).json()
        seen += [j["id"] for j in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/jobs?limit=2&after={page['next_cursor']}"
    assert seen == list(reversed(ids))
    cancelled = api.get("/v1/jobs?status=cancelled", headers=h).json()["items"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert api.get("/v1/jobs?status=bogus", headers=h).status_code == 422
    assert api.get("/v1/jobs?limit=0", headers=h).status_code == 422
    assert api.get("/v1/jobs?after=job_nope", headers=h).status_code == 404


def test_cancel_queued_job_and_its_events(api: TestClient, auth, text_files) -> None:
    h = auth()
    job_id = api.post("/v1/jobs", json=body(text_files), headers=h).json()["id"]
    r = api.post(f"/v1/jobs/{job_id}/cancel", headers=h)
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    again = api.post(f"/v1/jobs/{job_id}/cancel", headers=h)
    assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]
    events = api.get(f"/v1/jobs/{job_id}/events", headers=h).json()
    assert [e["message"] for e in events["items"]] == [
        "job queued",
        "job cancelled before it started",
    ]
    assert events["job_status"] == "cancelled"
    page = api.get(f"/v1/jobs/{job_id}/events?limit=1", headers=h).json()
    assert len(page["items"]) == 1 and page["next_cursor"] == page["items"][0]["id"]
    rest = api.get(f"/v1/jobs/{job_id}/events?after={page['next_cursor']}", headers=h).json()
    assert [e["message"] for e in rest["items"]] == ["job cancelled before it started"]


def test_event_stream_follows_until_the_job_ends(api: TestClient, auth, text_files) -> None:
    h = auth()
    job_id = api.post("/v1/jobs", json=body(text_files), headers=h).json()["id"]
    api.post(f"/v1/jobs/{job_id}/cancel", headers=h)
    with api.stream("GET", f"/v1/jobs/{job_id}/events?stream=true", headers=h) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    frames = [f for f in text.split("\n\n") if f.strip()]
    assert frames[0].startswith("id: ") and "event: job.event" in frames[0]
    assert "event: job.end" in frames[-1]
    assert json.loads(frames[-1].split("data: ", 1)[1])["status"] == "cancelled"
    # Resuming with Last-Event-ID sends only what came after.
    first_id = frames[0].split("\n")[0][4:]
    with api.stream(
        "GET", f"/v1/jobs/{job_id}/events?stream=true", headers={**h, "Last-Event-ID": first_id}
    ) as r:
        resumed = [f for f in "".join(r.iter_text()).split("\n\n") if f.strip()]
    assert len(resumed) == len(frames) - 1


def test_tenants_see_only_their_own_jobs(api: TestClient, auth, text_files) -> None:
    alice, bob = auth("alice"), auth("bob")
    job_id = api.post("/v1/jobs", json=body(text_files), headers=alice).json()["id"]
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("GET", f"/v1/jobs/{job_id}/events?stream=true"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("GET", f"/v1/jobs/{job_id}/artifacts"),
        ("GET", f"/v1/jobs/{job_id}/artifacts/config.json"),
    ]:
        r = api.request(method, path, headers=bob)
        assert r.status_code == 404, (method, path, r.status_code)
        assert job_id in r.json()["error"]["message"]
    assert api.get("/v1/jobs", headers=bob).json()["items"] == []
    assert api.get(f"/v1/jobs/{job_id}", headers=alice).json()["status"] == "queued"


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Basic abc"}, "expected 'Bearer <key>'"),
        ({"Authorization": "Bearer sf_wrong"}, "invalid or revoked"),
    ],
)
def test_every_v1_route_needs_a_valid_key(api: TestClient, headers, fragment) -> None:
    for method, path in [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/job_x"),
        ("POST", "/v1/jobs/job_x/cancel"),
        ("POST", "/v1/jobs/job_x/publish"),
        ("DELETE", "/v1/jobs/job_x"),
        ("PUT", "/v1/credentials/hub"),
        ("GET", "/v1/credentials/hub"),
        ("DELETE", "/v1/credentials/hub"),
        ("GET", "/v1/jobs/job_x/events"),
        ("GET", "/v1/jobs/job_x/artifacts"),
        ("GET", "/v1/jobs/job_x/artifacts/a.json"),
        ("GET", "/v1/methods"),
    ]:
        r = api.request(
            method, path, headers=headers, json={} if method in ("POST", "PUT") else None
        )
        assert r.status_code == 401, (method, path)
        assert fragment in r.json()["error"]["message"]
        assert r.headers["www-authenticate"] == "Bearer"


BAD_BODIES = [
    (
        {"method": {"name": "magic"}},
        "method",
        "unknown method 'magic'; available methods: auto, lillama, minitron, svd",
    ),
    ({"method": {"name": "minitron", "axes": ["width"]}}, "method.minitron.axes.0", "'depth'"),
    ({"distill": {"tokens": 8}}, "distill.tokens", "greater than or equal to 16"),
    ({"distill": {"top_k": 8, "hidden_weight": 1}}, "distill", "'hidden_weight' needs"),
    ({"method": {}}, "method", "'method.name' is required"),
    ({"method": {"name": "svd", "rank": 3}}, "method.svd.rank", "Extra inputs"),
    ({"target": {"ratio": 1.5}}, "target.ratio", "less than or equal to 1"),
    ({"target": {"ratio": 0}}, "target.ratio", "greater than 0"),
    ({"target": {"params": -5}}, "target.params", "greater than 0"),
    ({"target": {"params": 10, "ratio": 0.5}}, "target", "exactly one of 'params' or 'ratio'"),
    ({"target": {}}, "target", "exactly one of 'params' or 'ratio'"),
    ({"model": {"id": "not a repo id!"}}, "model", "not a valid Hub model id"),
    ({"model": {"id": "a/b", "path": "/x"}}, "model", "exactly one of 'id'"),
    ({"model": {"id": "a/b", "gguf_file": "m.gguf"}}, "model", "'gguf_file' needs 'path'"),
    ({"model": {"path": "missing-dir"}}, "model.path", "does not exist"),
    ({"model": {"path": "/etc"}}, "model.path", "outside the folders"),
    ({"calibration": {"path": "missing.txt"}}, "calibration.path", "does not exist"),
    ({"calibration": {"path": "../../../etc/passwd"}}, "calibration.path", "outside the folders"),
    ({"calibration": {"dataset": "org/data", "path": "x"}}, "calibration", "exactly one of"),
    ({"calibration": {"synthetic": True, "path": "calib.txt"}}, "calibration", "exactly one of"),
    ({"evaluation": {"synthetic": True}}, "evaluation", "held-out real text"),
    ({"evaluation": {"mixture": "general"}}, "evaluation", "held-out real text"),
    ({"calibration": {"mixture": "domain"}}, "calibration.mixture", "Input should be 'general'"),
    ({"calibration": {"mixture": "general", "path": "calib.txt"}}, "calibration", "exactly one of"),
    ({"calibration": {}}, "calibration", "leave calibration out for the general mixture"),
    (
        {"calibration": {"mixture": "general", "synthetic_share": 1.5}},
        "calibration.synthetic_share",
        "less than or equal to 1",
    ),
    (
        {"calibration": {"path": "calib.txt", "synthetic_share": 0.3}},
        "calibration",
        "'synthetic_share' is the sampled share of a 'mixture'",
    ),
    (
        {"calibration": {"path": "calib.txt", "seq_len": 4096, "max_tokens": 1024}},
        "calibration",
        "'seq_len' must not exceed",
    ),
    ({"evaluation": {"path": "missing.txt"}}, "evaluation.path", "does not exist"),
    ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("override", "field", "fragment"), BAD_BODIES)
def test_bad_input_is_a_4xx_that_says_what_to_fix(
    api: TestClient, auth, text_files, override, field, fragment
) -> None:
    r = api.post("/v1/jobs", json=body(text_files, **override), headers=auth())
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert fragment in error["message"], error
    fields = error["details"] if isinstance(error["details"], list) else [error["details"]]
    assert any(d["field"] == field for d in fields), fields


def test_missing_required_sections_and_malformed_json(api: TestClient, auth, text_files) -> None:
    r = api.post("/v1/jobs", json={"target": {"ratio": 0.5}}, headers=auth())
    assert r.status_code == 422
    missing = {d["field"] for d in r.json()["error"]["details"]}
    assert missing == {"model", "method"}  # calibration has a default: the general mixture
    r = api.post(
        "/v1/jobs", content=b'{"model": ', headers={**auth(), "content-type": "application/json"}
    )
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]


def test_local_model_folder_must_be_a_model(api: TestClient, auth, text_files, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    r = api.post("/v1/jobs", json=body(text_files, model={"path": "empty"}), headers=auth())
    assert r.status_code == 422 and "has no config.json" in r.json()["error"]["message"]
    r = api.post(
        "/v1/jobs",
        json=body(text_files, model={"path": "empty", "gguf_file": "m.gguf"}),
        headers=auth(),
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "model.gguf_file"


def test_symlink_escaping_the_roots_is_refused(api: TestClient, auth, text_files, tmp_path) -> None:
    (tmp_path / "link.txt").symlink_to("/etc/hostname")
    r = api.post(
        "/v1/jobs", json=body(text_files, calibration={"path": "link.txt"}), headers=auth()
    )
    assert r.status_code == 422 and "outside the folders" in r.json()["error"]["message"]


def test_unknown_job_and_route(api: TestClient, auth) -> None:
    r = api.get("/v1/jobs/job_missing", headers=auth())
    assert r.status_code == 404 and r.json()["error"]["message"] == "no job 'job_missing'"
    assert api.get("/v2/nothing").status_code == 404


def test_unreachable_target_of_a_local_model_is_refused_at_submit(
    api: TestClient, auth, text_files, tmp_path
) -> None:
    from bench.tiny import save_tiny_llama

    model = save_tiny_llama(tmp_path / "tiny")
    for target in ({"params": 1000}, {"ratio": 0.05}):
        r = api.post(
            "/v1/jobs",
            json=body(text_files, model={"path": str(model)}, target=target),
            headers=auth(),
        )
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert "reachable range" in error["message"]
        details = error["details"]
        assert details["field"] == "target"
        assert details["min_params"] < details["max_params"] == details["model_params"]
    ok = api.post("/v1/jobs", json=body(text_files, model={"path": str(model)}), headers=auth())
    assert ok.status_code == 202, ok.text
    # A Hub model cannot be inspected from the API: the worker checks it when loading.
    hub = api.post("/v1/jobs", json=body(text_files, target={"params": 1000}), headers=auth())
    assert hub.status_code == 202


def test_unreachable_minitron_shape_is_refused_at_submit(
    api: TestClient, auth, text_files, tmp_path
) -> None:
    """minitron's shape search runs on config.json + the checkpoint header, without torch."""
    from bench.tiny import save_tiny_llama

    model = save_tiny_llama(tmp_path / "tiny", layers=4)
    depth_only = {"name": "minitron", "axes": ["depth"]}
    r = api.post(
        "/v1/jobs",
        json=body(text_files, model={"path": str(model)}, method=depth_only, target={"ratio": 0.6}),
        headers=auth(),
    )
    # Whole layers of a 4-layer model cannot land within 1 % of -40 %.
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert "closest achievable" in error["message"] and "'mlp' axis" in error["message"]
    assert error["details"]["field"] == "target" and error["details"]["closest_params"] > 0
    searched = {"name": "minitron", "hidden_multiple": 16, "mlp_multiple": 1}
    ok = api.post(
        "/v1/jobs",
        json=body(text_files, model={"path": str(model)}, method=searched),
        headers=auth(),
    )
    assert ok.status_code == 202, ok.text


@pytest.mark.parametrize(
    ("missing", "fragment"),
    [
        ("method", '{"name": ...} with one of: auto, lillama, minitron, svd'),
        ("model", '{"path": "<model folder on the server>"}'),
        ("target", '{"ratio": 0.8}'),
    ],
)
def test_a_missing_field_says_what_to_give(
    api: TestClient, auth, text_files, missing: str, fragment: str
) -> None:
    spec = body(text_files)
    del spec[missing]
    r = api.post("/v1/jobs", json=spec, headers=auth())
    assert r.status_code == 422, r.text
    (problem,) = r.json()["error"]["details"]
    assert problem["field"] == missing
    assert problem["message"].startswith("Field required: ") and fragment in problem["message"]
