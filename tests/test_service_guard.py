"""The guard's answers to hand-made bad requests: byte-order marks and other encodings,
bodies stuffed with unknown fields, huge latent values, and header spellings that
RFC 7235 and RFC 9110 allow (scheme and media type are case-insensitive)."""

from __future__ import annotations

import json

import pytest

JSON = {"content-type": "application/json"}


def test_a_utf8_byte_order_mark_is_ignored(client):
    response = client.post("/sample", content=b"\xef\xbb\xbf" + b'{"n": 2, "seed": 5}', headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["seeds"] == [5, 6]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_json_in_another_encoding_is_a_400_that_says_utf8(client, encoding):
    response = client.post("/sample", content='{"n": 2}'.encode(encoding), headers=JSON)
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]


def test_thousands_of_unknown_fields_get_a_short_answer(client):
    body = {f"k{i}": 0 for i in range(5500)}
    raw = json.dumps(body).encode()
    assert len(raw) < 64 * 1024
    response = client.post("/sample", content=raw, headers=JSON)
    assert response.status_code == 400
    assert len(response.content) < 4096, len(response.content)
    error = response.json()["error"]
    assert "unknown fields" in error and "5495 more" in error and "accepted: n, seed" in error
    assert len(response.json()["detail"]) <= 10


@pytest.mark.parametrize("value", [1e38, -1e38, 101.0])
def test_latent_values_beyond_the_bound_name_the_field_and_the_range(client, value):
    vector = [value] + [0.0] * 7
    for form in ("array", "frames"):
        response = client.post("/interpolate", json={"start": vector, "end": 1, "label": 0,
                                                     "format": form})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert "start" in error and "-100 to 100" in error, error


def test_a_latent_at_the_bound_gives_finite_images(client):
    vector = [100.0] * 8
    response = client.post("/interpolate", json={"start": vector, "end": [-100.0] * 8,
                                                 "label": 0, "format": "array", "steps": 2})
    assert response.status_code == 200, response.text
    assert "NaN" not in response.text and "Infinity" not in response.text


@pytest.mark.parametrize("content_type", ["APPLICATION/JSON", "Application/Json; charset=UTF-8"])
def test_the_media_type_is_case_insensitive(client, content_type):
    response = client.post("/sample", content=b'{"n": 1}', headers={"content-type": content_type})
    assert response.status_code == 200, response.text
