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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse
from urllib3._collections import HTTPHeaderDict

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

# Requests per operation and mode: enough to reach every declared answer of the tiny
# model, few enough that the file runs in well under a minute on two shared cores.
EXAMPLES = 40
SERVED = "tiny"  # the model the `client` fixture serves; half the /v2 cases name it
BASE = "http://testserver"  # the test client's
# Every check, as configured by default, but one: a schema-valid request may still get a
# 400, for the limits that depend on the model asked for and cannot be in a document
# shared by every model (nz: a latent's length; num_classes: the label range; the most
# images its pixels allow) or that tie two fields (seed + n - 1 <= the largest seed).
# And an invalid request may be refused for its size first (413), before its content.
CONFIG = SchemathesisConfig.from_dict({"checks": {
    "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404"]},
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
def session(client) -> requests.Session:
    session = requests.Session()
    session.mount("http://", _TestClientAdapter(client))
    return session


def _strategy(operation, mode: GenerationMode):
    strategy = operation.as_strategy(generation_mode=mode)
    if "{name}" in operation.path:  # a random name is always a 404: name the served one too
        strategy = st.one_of(strategy, operation.as_strategy(generation_mode=mode,
                                                             path_parameters={"name": SERVED}))
    return strategy


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_to_generated_requests_is_declared(document, session, mode):
    schema = schemathesis.openapi.from_dict(document, config=CONFIG)
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


