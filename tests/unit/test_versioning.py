"""Semantic versions (SemVer 2.0.0 precedence) and the anti-rollback rule."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.versioning import RollbackRefused, Version, VersionError, check_upgrade, parse_version

# SemVer 2.0.0 §11 lists this chain, each lower than the next.
SPEC_CHAIN = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "2.0.0",
]

numbers = st.integers(min_value=0, max_value=10**6)
identifier = st.one_of(
    numbers.map(str),
    st.from_regex(r"[0-9]*[A-Za-z-][0-9A-Za-z-]{0,6}", fullmatch=True),
)
prerelease = st.lists(identifier, min_size=0, max_size=4)
build = st.lists(st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True), min_size=0, max_size=3)


def _text(major: int, minor: int, patch: int, pre: list[str], meta: list[str]) -> str:
    text = f"{major}.{minor}.{patch}"
    if pre:
        text += "-" + ".".join(pre)
    if meta:
        text += "+" + ".".join(meta)
    return text


versions = st.builds(_text, numbers, numbers, numbers, prerelease, build)


def test_spec_precedence_chain_is_strictly_increasing() -> None:
    parsed = [parse_version(v) for v in SPEC_CHAIN]
    for lower, higher in itertools.pairwise(parsed):
        assert lower < higher, f"{lower} should sort below {higher}"
        assert not higher < lower
    shuffled = sorted(reversed(parsed))
    assert [str(v) for v in shuffled] == SPEC_CHAIN


@given(versions)
def test_parse_round_trips(text: str) -> None:
    assert str(parse_version(text)) == text


@given(numbers, numbers, numbers, numbers, numbers, numbers)
def test_release_order_is_numeric_tuple_order(a: int, b: int, c: int, x: int, y: int, z: int) -> None:
    left, right = parse_version(f"{a}.{b}.{c}"), parse_version(f"{x}.{y}.{z}")
    assert (left < right) == ((a, b, c) < (x, y, z))
    assert (left == right) == ((a, b, c) == (x, y, z))


@given(numbers, numbers, numbers, st.lists(identifier, min_size=1, max_size=4))
def test_prerelease_sorts_below_its_release(major: int, minor: int, patch: int, pre: list[str]) -> None:
    release = parse_version(f"{major}.{minor}.{patch}")
    candidate = parse_version(_text(major, minor, patch, pre, []))
    assert candidate < release
    assert candidate.is_prerelease and not release.is_prerelease


@given(versions, build)
def test_build_metadata_does_not_change_precedence(text: str, meta: list[str]) -> None:
    base = parse_version(text.split("+")[0])
    with_meta = parse_version(_text(base.major, base.minor, base.patch, list(base.prerelease), meta))
    assert with_meta == base
    assert hash(with_meta) == hash(base)
    assert not with_meta < base and not base < with_meta


def test_numeric_identifiers_compare_numerically_and_below_alphanumeric() -> None:
    assert parse_version("1.0.0-2") < parse_version("1.0.0-10")
    assert parse_version("1.0.0-999") < parse_version("1.0.0-a")
    assert parse_version("1.0.0-alpha") < parse_version("1.0.0-alpha.0")


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "1.0",
        "1.0.0.0",
        "01.0.0",
        "1.00.0",
        "1.0.0-01",
        "v1.0.0",
        " 1.0.0",
        "1.0.0\n",
        "1.0.0-",
        "1.0.0+",
        "1.0.0-a..b",
        "1.٢.3",
        "1.0.0-ä",
        "",
    ],
)
def test_invalid_versions_are_refused(text: str) -> None:
    with pytest.raises(VersionError, match="semantic version"):
        parse_version(text)


def test_version_does_not_compare_with_other_types() -> None:
    with pytest.raises(TypeError):
        _ = parse_version("1.0.0") < "1.0.1"
    assert parse_version("1.0.0") != "1.0.0"
    assert Version(1, 2, 3) == parse_version("1.2.3")


@given(versions, versions)
def test_check_upgrade_refuses_exactly_the_downgrades(current: str, candidate: str) -> None:
    is_downgrade = parse_version(candidate) < parse_version(current)
    if is_downgrade:
        with pytest.raises(RollbackRefused, match="rollback"):
            check_upgrade(current, candidate)
    else:
        check_upgrade(current, candidate)
    check_upgrade(current, candidate, allow_rollback=True)  # an explicit rollback always passes


def test_check_upgrade_allows_reinstall_and_first_install() -> None:
    check_upgrade("1.2.0", "1.2.0")
    check_upgrade("1.2.0", "1.2.0+rebuild.2")
    check_upgrade(None, "0.0.1")
    with pytest.raises(RollbackRefused, match=r"1\.0\.0-rc\.1 is older than the installed 1\.0\.0"):
        check_upgrade("1.0.0", "1.0.0-rc.1")


def test_check_upgrade_rejects_an_invalid_candidate_even_without_a_current_version() -> None:
    with pytest.raises(VersionError):
        check_upgrade(None, "latest")
    with pytest.raises(VersionError):
        check_upgrade("1.0.0", "latest", allow_rollback=True)
