from __future__ import annotations

import pytest

from ari_app.asterisk import rtp_bind_address


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("192.0.2.10", "192.0.2.10"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("0.0.0.0", ""),  # wildcard: Asterisk's own choice, lookups included
        ("::", ""),
        ("sip.example.com", ""),
    ],
)
def test_rtp_binds_to_the_sip_address_only_when_it_is_one_address(host: str, expected: str) -> None:
    assert rtp_bind_address(host) == expected
