"""The OpenAPI description against the running collector, with schemathesis.

Every operation is called with generated bodies, headers and parameters,
valid and invalid, and schemathesis' default checks run on each answer: no
5xx, documented status codes, content types and bodies, schema-valid
requests accepted and schema-invalid ones refused with a 4xx, `Allow` on
405, no answer without the write key. Examples are bounded so the whole
run takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from journeys.producers.collect.openapi import openapi_document
from journeys.producers.collect.publisher import MemoryPublisher
from tests.unit.collect.client import AUTH
from tests.unit.collect.client import settings as config
from tests.unit.collect.server import running

CONFIG = config(shopify_secret="s", mandrill_webhook_key="k", sendgrid_public_key="AAAA")
SCHEMA = schemathesis.openapi.from_dict(openapi_document(CONFIG))


@pytest.fixture(scope="module")
def collector_url() -> Iterator[str]:
    with running(CONFIG, MemoryPublisher()) as url:
        yield url


@SCHEMA.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_collector_does_what_its_description_says(
    case: schemathesis.Case, collector_url: str
) -> None:
    case.call_and_validate(base_url=collector_url, headers=AUTH)
