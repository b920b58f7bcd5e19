"""The download's pure parts: bundle URLs, Content-Range, credentials; and the spool reporter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from edge_agent.ota import (
    Credentials,
    DownloadError,
    DownloadSettings,
    parse_content_range,
    resolve_url,
    spool_reporter,
)
from edge_agent.ota.download import _Retry
from models.mqtt_contract import Channel, OtaPayload


@pytest.mark.parametrize(
    ("url", "base", "resolved"),
    [
        ("http://fleet:8080/api/v1/bundles/ab", None, "http://fleet:8080/api/v1/bundles/ab"),
        ("https://fleet/api/v1/bundles/ab", "http://other", "https://fleet/api/v1/bundles/ab"),
        ("/api/v1/bundles/ab", "http://fleet:8080", "http://fleet:8080/api/v1/bundles/ab"),
        ("api/v1/bundles/ab", "http://fleet:8080/", "http://fleet:8080/api/v1/bundles/ab"),
        ("/api/v1/bundles/ab", "https://host/prefix", "https://host/prefix/api/v1/bundles/ab"),
    ],
)
def test_bundle_urls_resolve_against_the_fleet_server(url: str, base: str | None, resolved: str) -> None:
    assert resolve_url(url, base) == resolved


def test_a_relative_url_without_a_fleet_url_says_what_is_missing() -> None:
    with pytest.raises(DownloadError, match="relative") as caught:
        resolve_url("/api/v1/bundles/ab", None)
    assert caught.value.hint is not None and "fleet_url" in caught.value.hint


@pytest.mark.parametrize("url", ["ftp://fleet/bundle", "file:///etc/passwd"])
def test_only_http_and_https_are_fetched(url: str) -> None:
    with pytest.raises(DownloadError, match="only http and https"):
        resolve_url(url, "http://fleet")


def test_content_range_parses() -> None:
    assert parse_content_range("bytes 100-199/200") == (100, 199, 200)
    assert parse_content_range(" bytes 0-0/1 ") == (0, 0, 1)


@pytest.mark.parametrize(
    "value", [None, "", "bytes */200", "bytes 5-4/200", "bytes 0-200/200", "items 0-1/2"]
)
def test_an_unusable_content_range_is_a_retryable_protocol_error(value: str | None) -> None:
    with pytest.raises(_Retry):
        parse_content_range(value)


def test_credentials_make_a_basic_header_and_never_show_the_password() -> None:
    credentials = Credentials("dev-1", "s3cret")
    assert credentials.header() == "Basic ZGV2LTE6czNjcmV0"
    assert "s3cret" not in repr(credentials)


def test_download_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        DownloadSettings(timeout_s=0)


class _Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[Channel, Any]] = []

    def send(self, channel: Channel, make: Callable[[int], Any]) -> int:
        seq = 40 + len(self.sent)
        self.sent.append((channel, make(seq)))
        return seq


def test_the_spool_reporter_numbers_each_transition_on_the_ota_channel() -> None:
    outbox = _Outbox()
    report = spool_reporter(outbox)
    for state in ("assigned", "downloading"):
        report(OtaPayload(device_id="d", seq=0, model="m", version="2.0.0", state=state))
    assert [(channel, payload.seq, payload.state) for channel, payload in outbox.sent] == [
        (Channel.OTA, 40, "assigned"),
        (Channel.OTA, 41, "downloading"),
    ]
