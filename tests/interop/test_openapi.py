"""The OpenAPI 3.1 document of both APIs, checked by an independent validator
(openapi-spec-validator): the copy committed in the repository (which a Rust test keeps equal
to the generated one) and the one a running server serves at /api/v1/openapi.json."""

import json
from pathlib import Path

import requests
from openapi_spec_validator import validate

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_document_is_valid_openapi_3_1():
    doc = json.loads((REPO / "openapi.json").read_text())
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert "/v1/apps/{app}/credentials" in doc["paths"]
    assert "/api/v1/apps" in doc["paths"]


def test_the_server_serves_the_committed_document(dev_gateway):
    admin_url = dev_gateway.facts["admin_url"].rstrip("/")
    res = requests.get(f"{admin_url}/api/v1/openapi.json", timeout=10)
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("application/json")
    served = res.json()
    validate(served)
    assert served == json.loads((REPO / "openapi.json").read_text())
