"""Producer keys keep one account's or one visitor's events together."""

from journeys.producers.client import partition_key
from tests.unit.engine.journey import ev


def test_keys() -> None:
    assert partition_key(ev("page_view", account_id="erp-1", email="a@x.nl")) == b"erp-1"
    assert partition_key(ev("page_view", email="Jan@Kwekerij-X.nl")) == b"kwekerij-x.nl"
    assert partition_key(ev("page_view", email="jan@gmail.com")) == b"jan@gmail.com"
    assert partition_key(ev("page_view", contact_id="c1", anonymous_id="v")) == b"contact:c1"
    assert partition_key(ev("page_view", anonymous_id="v")) == b"anonymous:v"
