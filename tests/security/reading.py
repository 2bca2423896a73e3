"""The read endpoint's credentials in its security tests (the endpoints and their database
are fixtures of this folder's conftest)."""

from __future__ import annotations

import base64

from pydantic import SecretStr

from journeys.sinks.clickhouse.read_access import ReadAccess

USER, PASSWORD = "reader", "s3cret-for-tests"
ACCESS = ReadAccess(USER, SecretStr(PASSWORD))
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BASIC = {"Authorization": f"Basic {TOKEN}"}
