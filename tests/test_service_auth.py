"""The optional bearer token (DCGAN_API_TOKEN): generation needs it, health, metrics,
the model card and the page do not. The token is read once, at start-up: `serving_app`
builds the guard with it."""

from __future__ import annotations

from test_service_runtime import export_tiny, serving_app


def test_without_a_token_configured_generation_is_open(monkeypatch, tmp_path):
    path = export_tiny(tmp_path / "tiny.onnx")
    with serving_app(monkeypatch, path) as client:
        assert client.post("/sample", json={"n": 1}).status_code == 200


def test_a_configured_token_guards_generation_but_not_health(monkeypatch, tmp_path):
    tiny_onnx = export_tiny(tmp_path / "tiny.onnx")
    with serving_app(monkeypatch, tiny_onnx, DCGAN_API_TOKEN="s3cret") as client:
        assert client.post("/sample", json={"n": 1}).status_code == 401
        wrong = client.post("/sample", json={"n": 1}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "bearer token" in wrong.json()["error"]
        assert client.post("/interpolate", json={"start": 1, "end": 2}).status_code == 401
        ok = client.post("/sample", json={"n": 1}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        for path in ("/livez", "/readyz", "/model", "/"):
            assert client.get(path).status_code == 200, path
        assert client.get("/model").json()["auth_required"] is True


def test_the_bearer_scheme_is_case_insensitive_and_one_header_is_required(monkeypatch, tmp_path):
    tiny_onnx = export_tiny(tmp_path / "tiny.onnx")
    with serving_app(monkeypatch, tiny_onnx, DCGAN_API_TOKEN="s3cret") as client:
        for scheme in ("Bearer", "bearer", "BEARER"):
            ok = client.post("/sample", json={"n": 1}, headers={"Authorization": f"{scheme} s3cret"})
            assert ok.status_code == 200, scheme
        for wrong in ("Basic s3cret", "Bearer", "Bearers3cret", "Bearer s3cre"):
            assert client.post("/sample", json={"n": 1},
                               headers={"Authorization": wrong}).status_code == 401, wrong
        # Two Authorization headers: which one counts would be a guess, so neither does.
        twice = client.post("/sample", json={"n": 1},
                            headers=[("Authorization", "Bearer nope"),
                                     ("Authorization", "Bearer s3cret")])
        assert twice.status_code == 400 and "one Authorization header" in twice.json()["error"]


def test_with_a_token_the_openapi_document_asks_for_it_and_declares_the_401(monkeypatch, tmp_path):
    import schemathesis

    tiny_onnx = export_tiny(tmp_path / "tiny.onnx")
    with serving_app(monkeypatch, tiny_onnx, DCGAN_API_TOKEN="s3cret") as client:
        document = client.get("/docs.json").json()
        response = client.post("/sample", json={"n": 1})
    assert document["paths"]["/sample"]["post"]["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert response.status_code == 401
    case = schemathesis.openapi.from_dict(document)["/sample"]["POST"].Case(
        body={"n": 1}, media_type="application/json")
    case.validate_response(response)  # the declared 401: its body and WWW-Authenticate


def test_with_a_token_answers_are_cached_privately_and_the_token_comes_first(monkeypatch, tmp_path):
    tiny_onnx = export_tiny(tmp_path / "tiny.onnx")
    body = {"n": 1, "seed": 3}
    with serving_app(monkeypatch, tiny_onnx, DCGAN_API_TOKEN="s3cret", DCGAN_CACHE_MAX_AGE="0") as client:
        response = client.post("/sample", json=body, headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 200
        # a shared cache must not hand the images to clients without the token
        assert response.headers["cache-control"] == "private, no-cache"
        assert response.headers["vary"] == "Authorization"
        tag = response.headers["etag"]
        unauthorised = client.post("/sample", json=body, headers={"If-None-Match": tag})
        assert unauthorised.status_code == 401, "the token is checked before the cache"
        cached = client.post("/sample", json=body, headers={
            "Authorization": "Bearer s3cret", "If-None-Match": tag})
        assert cached.status_code == 304
