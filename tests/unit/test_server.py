"""Choose the bind address and warn when the API is exposed without auth."""

from __future__ import annotations

import logging

import pytest

from socmeth.config import load_config
from socmeth.server import bind_host, warn_if_exposed, with_auth_decided


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event", "") for r in caplog.records]


def test_the_default_bind_address_is_loopback() -> None:
    assert bind_host(load_config(environ={})) == "127.0.0.1"


@pytest.mark.parametrize(
    ("host", "warned"),
    [("127.0.0.1", False), ("localhost", False), ("::1", False), ("0.0.0.0", True)],
    ids=["loopback", "localhost", "ipv6-loopback", "every-address"],
)
def test_an_exposed_server_without_auth_warns_loudly(
    host: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="socmeth")

    warn_if_exposed(load_config(environ={}), host)

    assert ("server.unprotected" in events(caplog)) is warned


@pytest.mark.parametrize(
    ("host", "given", "enabled"),
    [
        ("127.0.0.1", None, False),
        ("0.0.0.0", None, True),
        ("10.1.2.3", None, True),
        ("0.0.0.0", False, False),
        ("127.0.0.1", True, True),
    ],
)
def test_auth_left_unset_is_on_beyond_loopback(
    host: str, given: bool | None, enabled: bool
) -> None:
    overrides = {} if given is None else {"auth.enabled": given}
    config = load_config(environ={}, overrides=overrides)

    assert with_auth_decided(config, host).auth.enabled is enabled
