"""Downloading a bundle over HTTP(S) with Range resume, using only the standard library.

The bytes go to ``DIR/SHA256.efb.part``. A request that breaks off (a timeout, a reset, a
server error) leaves what it wrote there, and the next request asks only for the rest:
``Range: bytes=N-`` with ``If-Range: "SHA256"`` (the fleet server's ETag), so a server whose file
changed sends the whole file again (200) instead of a mismatched tail. That holds across agent
restarts too: the ``.part`` file is the only state. Once the size is reached, the file's sha256
must be the one the desired state announced; then it is renamed to ``DIR/SHA256.efb``.

Failed requests are retried with exponential backoff and full jitter; the budget counts
*consecutive* failures, so a flaky link that breaks every few megabytes still finishes.
Answers that retrying cannot fix (bad credentials, no such bundle, a size that contradicts the
desired state) fail at once. Redirects are not followed: they would carry the device's
credentials to another host.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.ota.journal import fsync_directory
from edge_agent.telemetry.backoff import Backoff
from models.bundle import sha256_file

log = logging.getLogger("edgefleet.agent.ota")

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class DownloadSettings:
    timeout_s: float = 30.0
    """Connecting, and each read: a server silent for this long counts as a failed request."""
    max_failures: int = 8
    """Consecutive failed requests (without a byte of progress) before giving up."""
    retry_base_s: float = 1.0
    retry_cap_s: float = 30.0
    chunk_bytes: int = 256 * 1024
    sync_every_bytes: int = 8 * 1024 * 1024
    """fsync the ``.part`` file this often, so a power cut loses little of a large download."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.max_failures < 1 or self.chunk_bytes < 1:
            raise ValueError("download timeout, failure budget and chunk size must be positive")


@dataclass(frozen=True)
class Credentials:
    """HTTP Basic credentials: the device's MQTT user name and password."""

    username: str
    password: str = field(repr=False)

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


class DownloadError(Exception):
    """The bundle could not be downloaded; ``message`` says why and ``hint`` what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message} ({hint})")
        self.message = message
        self.hint = hint


class DownloadCancelled(Exception):
    """The download was stopped from outside (the agent stops, or a newer desired state)."""


class _Retry(Exception):
    """A failed request worth retrying."""


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    resumed_from: int
    """Bytes already on disk when this call started (0: a fresh download)."""
    requests: int


def resolve_url(url: str, base_url: str | None) -> str:
    """An absolute bundle URL; a relative one is taken against the fleet server's ``base_url``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return url
    if parsed.scheme:
        raise DownloadError(
            f"bundle URL {url!r} uses {parsed.scheme!r}; only http and https are supported",
            hint="the fleet server should publish /api/v1/bundles/SHA256 URLs",
        )
    if not base_url:
        raise DownloadError(
            f"bundle URL {url!r} is relative and the agent has no fleet server URL to resolve it against",
            hint="give the agent the fleet server's URL (fleet_url)",
        )
    return urllib.parse.urljoin(base_url.rstrip("/") + "/", url.lstrip("/"))


def parse_content_range(value: str | None) -> tuple[int, int, int]:
    """``bytes FIRST-LAST/TOTAL`` → (first, last, total); anything else is a protocol error."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        raise _Retry(f"the server answered 206 with an unusable Content-Range {value!r}")
    first, last, total = (int(group) for group in match.groups())
    if last < first or last >= total:
        raise _Retry(f"the server answered 206 with an impossible Content-Range {value!r}")
    return first, last, total


def part_path(directory: Path, sha256: str) -> Path:
    return Path(directory) / f"{sha256}.efb.part"


def final_path(directory: Path, sha256: str) -> Path:
    return Path(directory) / f"{sha256}.efb"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


class Downloader:
    """Fetches bundles by sha256 into a directory, resuming what an earlier try left there."""

    def __init__(
        self, settings: DownloadSettings = DownloadSettings(), *, credentials: Credentials | None = None
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self._opener = urllib.request.build_opener(_NoRedirects)

    def fetch(
        self, url: str, directory: Path, *, sha256: str, size: int, cancel: threading.Event
    ) -> DownloadResult:
        """Download ``url`` until it is ``size`` bytes with ``sha256``; raises ``DownloadError``
        when it cannot, ``DownloadCancelled`` when ``cancel`` is set."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        final, part = final_path(directory, sha256), part_path(directory, sha256)
        if final.exists():
            if sha256_file(final) == (sha256, size):
                return DownloadResult(final, size, resumed_from=size, requests=0)
            final.unlink()
        resumed_from = _size(part)
        backoff = Backoff(base_s=self.settings.retry_base_s, cap_s=self.settings.retry_cap_s)
        requests = 0
        while True:
            if cancel.is_set():
                raise DownloadCancelled()
            have = _size(part)
            if have > size:
                log.warning("%s is larger than the bundle (%d > %d bytes): starting over", part, have, size)
                part.unlink()
                continue
            if have == size:
                digest, _ = sha256_file(part)
                if digest == sha256:
                    part.replace(final)
                    fsync_directory(directory)
                    return DownloadResult(final, size, resumed_from=resumed_from, requests=requests)
                part.unlink()
                failure = f"the downloaded file's sha256 is {digest}, not the announced {sha256}"
            else:
                requests += 1
                try:
                    self._request(url, part, have, size, sha256, cancel)
                    continue
                except _Retry as exc:
                    failure = str(exc)
                    if _size(part) > have:
                        backoff.reset()  # it made progress: the failure budget starts again
            if backoff.attempt + 1 >= self.settings.max_failures:
                raise DownloadError(
                    f"gave up downloading {url} after {backoff.attempt + 1} failed attempts; last: {failure}",
                    hint="check that the device reaches the fleet server; a newer desired state retries",
                )
            delay = backoff.next_delay()
            log.warning("download of %s failed (%s); retrying in %.1f s", url, failure, delay)
            if cancel.wait(delay):
                raise DownloadCancelled()

    def _request(
        self, url: str, part: Path, have: int, size: int, sha256: str, cancel: threading.Event
    ) -> int:
        """One request for the bytes from ``have`` on; returns how many it wrote."""
        headers = {"Accept-Encoding": "identity", "User-Agent": "edgefleet-agent"}
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.header()
        if have:
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = f'"{sha256}"'
        request = urllib.request.Request(url, headers=headers)
        try:
            response = self._opener.open(request, timeout=self.settings.timeout_s)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise self._refusal(url, exc.code, part, have) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Retry(f"cannot reach {url}: {_describe(exc)}") from None
        with response:
            if response.status == 206:
                first, _, total = parse_content_range(response.headers.get("Content-Range"))
                if total != size:
                    raise _size_conflict(url, total, size)
                if first != have:
                    part.unlink(missing_ok=True)
                    raise _Retry(f"the server sent bytes from {first}, not from {have}; starting over")
                mode = "ab"
            elif response.status == 200:
                length = response.headers.get("Content-Length")
                if length is not None and int(length) != size:
                    raise _size_conflict(url, int(length), size)
                mode, have = "wb", 0  # the whole file (no Range asked, or If-Range did not match)
            else:
                raise DownloadError(f"{url} answered HTTP {response.status}, which is not a bundle download")
            return self._copy(response, part, mode, have, size, cancel)

    def _copy(
        self, response: Any, part: Path, mode: str, have: int, size: int, cancel: threading.Event
    ) -> int:
        written = unsynced = 0
        with part.open(mode) as out:
            try:
                while True:
                    if cancel.is_set():
                        raise DownloadCancelled()
                    try:
                        # read1: whatever has arrived (up to a chunk), so a stalled or dropped
                        # connection still leaves every byte received in the .part file.
                        chunk = response.read1(self.settings.chunk_bytes)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retry(
                            f"the connection broke after {have + written} bytes: {_describe(exc)}"
                        ) from None
                    if not chunk:
                        break
                    if cancel.is_set():  # checked again: the read may have waited long
                        raise DownloadCancelled()
                    if have + written + len(chunk) > size:
                        raise DownloadError(
                            f"the server sent more than the {size} bytes the desired state announced",
                            hint="the fleet's desired state and its bundle disagree: push the bundle again",
                        )
                    out.write(chunk)
                    written += len(chunk)
                    unsynced += len(chunk)
                    if unsynced >= self.settings.sync_every_bytes:
                        out.flush()
                        os.fsync(out.fileno())
                        unsynced = 0
            finally:
                out.flush()
                os.fsync(out.fileno())
        if have + written < size:
            raise _Retry(f"the response ended after {have + written} of {size} bytes")
        return written

    def _refusal(self, url: str, status: int, part: Path, have: int) -> Exception:
        if status == 416:
            # Our partial file claims more than the server has: it is not a prefix of this bundle.
            part.unlink(missing_ok=True)
            return _Retry(f"the server has no bytes from {have} on (HTTP 416); starting over")
        if status in (401, 403):
            return DownloadError(
                f"the fleet server refused the device's credentials for {url} (HTTP {status})",
                hint="check the agent's MQTT user name and password: bundle downloads use them",
            )
        if status == 404:
            return DownloadError(
                f"{url} does not exist on the fleet server (HTTP 404)",
                hint="push the bundle to the fleet server (edgefleet models push) before assigning it",
            )
        if 300 <= status < 400:
            return DownloadError(
                f"{url} redirects (HTTP {status}); the agent does not follow redirects with its credentials",
                hint="publish the final bundle URL in the desired state",
            )
        if status in (408, 425, 429) or status >= 500:
            return _Retry(f"the server answered HTTP {status}")
        return DownloadError(f"{url} answered HTTP {status}")


def _size_conflict(url: str, served: int, announced: int) -> DownloadError:
    return DownloadError(
        f"{url} is {served} bytes, but the desired state announced {announced}",
        hint="the fleet's desired state and its bundle disagree: push the bundle again",
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
