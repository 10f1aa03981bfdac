"""The OpenAPI document (/docs.json) tells the truth: requests generated from it, valid
and invalid, get only answers it declares (status, media type, headers, body schema),
never a 5xx, and invalid ones are refused. Driven by schemathesis through the in-process
service (the tiny class-conditional model, no token), then a few hand-written cases
against the declared components.
"""

from __future__ import annotations

import io

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from urllib3 import HTTPResponse
from urllib3._collections import HTTPHeaderDict

# Requests per operation and mode: enough to reach every declared answer of the tiny
# model, few enough that the file runs in well under a minute on two shared cores.
EXAMPLES = 20
SERVED = "tiny"  # the model the `client` fixture serves; half the /v2 cases name it
BASE = "http://testserver"  # the test client's
# Every check, as configured by default, but one: a schema-valid request may still get a
# 400, for the limits that depend on the model asked for and cannot be in a document
# shared by every model (nz: a latent's length; num_classes: the label range; the most
# images its pixels allow) or that tie two fields (seed + n - 1 <= the largest seed).
# And an invalid request may be refused for its size first (413), before its content.
# A valid request with an If-None-Match the answer matches (`*` matches any) gets its
# declared 304.
CONFIG = SchemathesisConfig.from_dict({"checks": {
    "positive_data_acceptance": {"expected-statuses": ["2xx", "304", "400", "404"]},
    "negative_data_rejection": {"expected-statuses": ["400", "404", "413", "415"]},
}})


class _TestClientAdapter(HTTPAdapter):
    """Sends a `requests` call (what schemathesis makes) through Starlette's test client,
    so that the cases reach the service whose lifespan the `client` fixture runs, in its
    event loop."""

    def __init__(self, client) -> None:
        super().__init__()
        self.client = client

    def send(self, request, **kwargs):
        answer = self.client.request(request.method, request.url, content=request.body or b"",
                                     headers=dict(request.headers))
        raw = HTTPResponse(body=io.BytesIO(answer.content), status=answer.status_code,
                           headers=HTTPHeaderDict(answer.headers.multi_items()),
                           preload_content=False, decode_content=False)
        return self.build_response(request, raw)


@pytest.fixture(scope="module")
def document(client) -> dict:
    response = client.get("/docs.json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def schema(document):
    return schemathesis.openapi.from_dict(document, config=CONFIG)


@pytest.fixture(scope="module")
def session(client) -> requests.Session:
    session = requests.Session()
    session.mount("http://", _TestClientAdapter(client))
    return session


def _strategy(operation, mode: GenerationMode):
    """The operation's cases; as a random model name is always a 404, half of them name
    the served model (in the path, or in a valid body's `model`)."""
    strategy = operation.as_strategy(generation_mode=mode)
    if "{name}" in operation.path:
        return st.one_of(strategy, operation.as_strategy(generation_mode=mode,
                                                         path_parameters={"name": SERVED}))
    if mode == GenerationMode.POSITIVE:  # (in a negative case, `model` may be the fault)
        return st.tuples(strategy, st.booleans()).map(_served)
    return strategy


def _served(drawn):
    case, name_it = drawn
    if name_it and isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = SERVED
    return case


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_to_generated_requests_is_declared(schema, session, mode):
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    failures = {}
    for operation in operations:
        if operation.path == "/metrics":
            continue  # BentoML's, and it needs the server's multiprocess directory

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=_strategy(operation, mode))
        def check(case):
            case.call_and_validate(base_url=BASE, session=session)

        try:
            check()
        except Unsatisfiable:  # nothing to get wrong in a request without parameters or body
            assert mode == GenerationMode.NEGATIVE, operation.label
        except (Exception, BaseExceptionGroup) as exc:  # every operation's, listed at the end
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


# --- hand-written cases: each answer matches what the document declares for it ------------

LATENT = [0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 1.0, -2.0]  # the tiny model's nz is 8

CASES = [
    # (path, JSON body, status, media type)
    ("/sample", {"n": 2, "seed": 3, "format": "array"}, 200, "application/json"),
    ("/sample", {"n": 2, "seed": 3, "format": "json", "label": None}, 200, "application/json"),
    ("/sample", {"n": 4, "format": "png"}, 200, "image/png"),
    ("/interpolate", {"start": LATENT, "end": 7, "steps": 3, "label": 1, "format": "array"}, 200, "application/json"),
    ("/interpolate", {"start": 1, "end": LATENT, "steps": 3, "label": 2, "format": "frames"}, 200, "application/json"),
    ("/interpolate", {"start": 1, "end": 2, "steps": 3, "format": "gif"}, 200, "image/gif"),
    ("/interpolate", {"start": 1, "end": 2, "steps": 3, "format": "png"}, 200, "image/png"),
    ("/interpolate", {"start": [1e38] * 8, "end": 2, "format": "array"}, 400, "application/json"),
    ("/sample", {"n": 0}, 400, "application/json"),
    ("/sample", {f"k{i}": 0 for i in range(5000)}, 400, "application/json"),
    ("/sample", {"model": "nope"}, 404, "application/json"),
    ("/sample", {"n": 1, "pad": "x" * 70_000}, 413, "application/json"),
]


@pytest.mark.parametrize("path, body, status, media_type", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_hand_written_requests_get_the_answers_the_document_declares(
        schema, session, path, body, status, media_type):
    case = schema[path]["POST"].Case(body=body, media_type="application/json")
    response = case.call(base_url=BASE, session=session)
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"][0].split(";")[0] == media_type
    case.validate_response(response)  # every check: status, media type, headers, body schema


@pytest.mark.parametrize("path, body", [("/sample", {"n": 2, "seed": 3}),
                                        ("/interpolate", {"start": 1, "end": 2, "steps": 3})])
def test_a_revalidated_answer_and_its_304_are_declared(schema, session, path, body):
    first = schema[path]["POST"].Case(body=body, media_type="application/json")
    response = first.call(base_url=BASE, session=session)
    first.validate_response(response)
    again = schema[path]["POST"].Case(body=body, media_type="application/json",
                                      headers={"If-None-Match": response.headers["etag"][0]})
    cached = again.call(base_url=BASE, session=session)
    assert cached.status_code == 304
    again.validate_response(cached)


def test_a_body_that_is_not_json_gets_a_declared_415(schema, session):
    case = schema["/sample"]["POST"].Case(body="n=2", media_type="text/plain")
    response = case.call(base_url=BASE, session=session)
    assert response.status_code == 415
    case.validate_response(response)


def test_the_document_declares_unions_nullables_media_types_and_refusals(schema, document):
    schema.validate()  # against OpenAPI 3.0's own schema (BentoML's document was not valid)
    schemas = document["components"]["schemas"]
    walk = schemas["InterpolateRequest"]["properties"]
    for end in ("start", "end"):  # a seed or a latent vector, bounded entries
        seed, latent = walk[end]["anyOf"]
        assert seed["type"] == "integer" and latent["type"] == "array"
        assert latent["items"]["minimum"] == -100 and latent["items"]["maximum"] == 100
    assert walk["label"]["nullable"] is True and walk["truncation"]["nullable"] is True
    assert schemas["Error"]["properties"]["detail"]["type"] == "array"
    sample = document["paths"]["/sample"]["post"]
    assert set(sample["responses"]) == {"200", "304", "400", "401", "404", "408", "413", "415", "503"}
    assert {"ETag", "Cache-Control"} <= set(sample["responses"]["200"]["headers"])
    assert {"name": "If-None-Match", "in": "header"}.items() <= sample["parameters"][0].items()
    assert "Retry-After" in sample["responses"]["503"]["headers"]
    assert set(sample["responses"]["200"]["content"]) == {"application/json", "image/png"}
    walks = document["paths"]["/interpolate"]["post"]["responses"]["200"]["content"]
    assert set(walks) == {"application/json", "image/png", "image/gif"}
    for path in ("/model", "/models", "/directions", "/project", "/v2/models/{name}/infer"):
        assert path in document["paths"], path
    assert "security" not in sample  # no token here



@pytest.mark.parametrize("binary", [False, True])
def test_an_inference_answer_is_the_declared_one(schema, session, binary):
    body = {"inputs": [{"name": "seed", "shape": [2], "datatype": "INT64", "data": [1, 2]}],
            "parameters": {"binary_data_output": binary}}
    case = schema["/v2/models/{name}/infer"]["POST"].Case(
        path_parameters={"name": SERVED}, body=body, media_type="application/json")
    response = case.call(base_url=BASE, session=session)
    assert response.status_code == 200, response.text[:300]
    media_type = "application/octet-stream" if binary else "application/json"
    assert response.headers["content-type"][0] == media_type
    case.validate_response(response)
