"""The model registry over the database: register verified bundles, list names and versions.

A model is a name; it has versions (semver); each version has one bundle per hardware profile.
(name, version, profile) is unique: pushing the same bytes again is a no-op, pushing different
bytes under the same triple is a conflict (bump the version instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fleet.db.models import Bundle
from fleet.errors import Conflict, NotFound
from models.bundle import VerifiedBundle
from models.versioning import Version, VersionError, parse_version


def find_bundle(session: Session, name: str, version: str, profile: str) -> Bundle | None:
    return session.scalar(
        select(Bundle).where(Bundle.name == name, Bundle.version == version, Bundle.profile == profile)
    )


def check_can_register(session: Session, sha256: str, name: str, version: str, profile: str) -> Bundle | None:
    """The identical bundle already registered (a repeat push), None if new; Conflict otherwise."""
    existing = find_bundle(session, name, version, profile)
    if existing is None:
        return None
    if existing.sha256 == sha256:
        return existing
    raise Conflict(
        f"{name} {version} for profile {profile} is already in the registry with different content "
        f"(sha256 {existing.sha256[:12]}…, pushed {existing.uploaded_at:%Y-%m-%d %H:%M} UTC)",
        hint="a published version never changes: bump the version (e.g. with `edgefleet convert --version`)",
        details={"existing_sha256": existing.sha256},
    )


def register_bundle(
    session: Session, verified: VerifiedBundle, *, uploaded_by: str | None
) -> tuple[Bundle, bool]:
    """Add a verified bundle; return the row and whether it is new."""
    manifest = verified.manifest
    existing = check_can_register(session, verified.sha256, manifest.name, manifest.version, manifest.profile)
    if existing is not None:
        return existing, False
    row = Bundle(
        sha256=verified.sha256,
        name=manifest.name,
        version=manifest.version,
        profile=manifest.profile,
        format=str(manifest.format),
        precision=str(manifest.precision),
        size=verified.size,
        key_id=verified.key_id,
        manifest=manifest.model_dump(mode="json"),
        created=manifest.created,
        uploaded_by=uploaded_by,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        # Another push of the same triple won the race between the check and the insert.
        session.rollback()
        raise Conflict(
            f"{manifest.name} {manifest.version} for {manifest.profile} was pushed concurrently"
        ) from None
    return row, True


def get_bundle(session: Session, sha256: str) -> Bundle:
    row = session.get(Bundle, sha256)
    if row is None:
        raise NotFound(f"no bundle with sha256 {sha256}", hint="list models with `edgefleet models ls`")
    return row


def bundles_of(session: Session, name: str, version: str | None = None) -> Sequence[Bundle]:
    query = select(Bundle).where(Bundle.name == name)
    if version is not None:
        query = query.where(Bundle.version == version)
    rows = session.scalars(query.order_by(Bundle.profile)).all()
    if not rows:
        what = f"model {name!r}" if version is None else f"version {version} of model {name!r}"
        raise NotFound(f"no {what} in the registry", hint="list models with `edgefleet models ls`")
    return rows


def all_bundles(session: Session) -> Sequence[Bundle]:
    return session.scalars(select(Bundle).order_by(Bundle.name)).all()


# --- pure grouping ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionGroup:
    version: str
    bundles: tuple[Bundle, ...]


@dataclass(frozen=True)
class ModelGroup:
    name: str
    versions: tuple[VersionGroup, ...]  # newest first

    @property
    def latest(self) -> str:
        return self.versions[0].version

    def distinct(self, attribute: str) -> list[str]:
        return sorted({str(getattr(b, attribute)) for v in self.versions for b in v.bundles})

    @property
    def bundle_count(self) -> int:
        return sum(len(v.bundles) for v in self.versions)


def version_key(text: str) -> tuple[int, Version | str]:
    # Every registered version is semver (the manifest schema checks it); the fallback only keeps
    # sorting total if an older row ever holds something else.
    try:
        return (1, parse_version(text))
    except VersionError:
        return (0, text)


def group_models(bundles: Iterable[Bundle]) -> list[ModelGroup]:
    """Bundles grouped by model name (sorted) and version (newest first), profiles sorted."""
    by_name: dict[str, dict[str, list[Bundle]]] = {}
    for bundle in bundles:
        by_name.setdefault(bundle.name, {}).setdefault(bundle.version, []).append(bundle)
    groups = []
    for name in sorted(by_name):
        versions = sorted(by_name[name], key=version_key, reverse=True)
        groups.append(
            ModelGroup(
                name=name,
                versions=tuple(
                    VersionGroup(v, tuple(sorted(by_name[name][v], key=lambda b: b.profile)))
                    for v in versions
                ),
            )
        )
    return groups
