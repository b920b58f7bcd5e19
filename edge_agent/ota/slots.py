"""A/B slots on disk: ``DATA_DIR/slots/MODEL/{a,b}``, each holding one extracted, verified bundle.

One slot is *active* (committed; what the agent serves after a restart) and the other is the
*spare* an update stages into, so the previous version stays on disk, intact, for a rollback.
Which slot is active lives in the journal, not here.

A slot's extraction sits in a directory named after its content (``VERSION-SHA16``), so a path
the serving repository remembers never silently points at another bundle's files after the slot
is reused. Staging extracts into a scratch directory beside the slots and renames it into place:
a slot directory is always either empty or a complete extraction.

Files on disk can change between runs (a disk error, a person), so ``reopen`` checks a slot again
before it is served after a restart: the manifest's signature against the trusted keys, and every
file's size and sha256 against the manifest, with no file missing or added.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.ota.journal import SlotName, SlotRecord, fsync_directory
from edge_agent.serving import InstalledBundle
from models.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    ExtraFile,
    HashMismatch,
    Manifest,
    MissingFile,
    MissingSignature,
    extract_bundle,
    parse_manifest,
    sha256_file,
    verify_manifest_signature,
)

SLOTS_DIR = "slots"
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def extraction_name(version: str, sha256: str) -> str:
    return f"{version}-{sha256[:16]}"


class SlotStore:
    """The slot directories under one data directory."""

    def __init__(self, data_dir: Path, trusted_keys: Sequence[Ed25519PublicKey]) -> None:
        if not trusted_keys:
            raise ValueError("at least one trusted key is needed to verify slots")
        self.data_dir = Path(data_dir)
        self.trusted_keys = list(trusted_keys)

    @property
    def root(self) -> Path:
        return self.data_dir / SLOTS_DIR

    def slot_dir(self, model: str, slot: SlotName) -> Path:
        # Model names come from signed manifests, but a path is built only from a safe one.
        if not _MODEL_NAME.fullmatch(model):
            raise ValueError(f"{model!r} is not a model name that can name a directory")
        return self.root / model / slot

    def clear(self, model: str, slot: SlotName) -> None:
        """Empty a slot (the caller makes sure nothing loaded still reads from it)."""
        shutil.rmtree(self.slot_dir(model, slot), ignore_errors=True)

    def stage(self, model: str, slot: SlotName, bundle: Path) -> tuple[InstalledBundle, SlotRecord]:
        """Verify ``bundle`` and extract it into ``slot``, replacing what the slot held.

        Raises the verifier's ``BundleError`` when the bundle is refused; the slot is then empty.
        """
        target_root = self.slot_dir(model, slot)
        scratch = target_root.parent / f".staging-{slot}"
        shutil.rmtree(scratch, ignore_errors=True)
        self.clear(model, slot)
        scratch.parent.mkdir(parents=True, exist_ok=True)
        try:
            verified = extract_bundle(Path(bundle), scratch, self.trusted_keys)
            if verified.manifest.name != model:
                raise ValueError(
                    f"the bundle holds model {verified.manifest.name!r}, not {model!r}"
                )  # the updater checks this before staging; a guard, never an operator's error
            target_root.mkdir(parents=True)
            directory = target_root / extraction_name(verified.manifest.version, verified.sha256)
            scratch.rename(directory)
            fsync_directory(target_root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        installed = InstalledBundle(
            manifest=verified.manifest,
            directory=directory,
            source=Path(bundle),
            sha256=verified.sha256,
            key_id=verified.key_id,
        )
        record = SlotRecord(
            version=verified.manifest.version,
            sha256=verified.sha256,
            key_id=verified.key_id,
            directory=str(directory.relative_to(self.data_dir)),
        )
        return installed, record

    def reopen(self, record: SlotRecord) -> InstalledBundle:
        """The slot's bundle, checked again; raises a ``BundleError`` when it no longer verifies."""
        directory = self.data_dir / record.directory
        manifest, key = verify_extracted(directory, self.trusted_keys)
        if manifest.version != record.version:
            raise MissingFile(
                f"{directory} holds version {manifest.version}, but the journal says {record.version}",
                file=MANIFEST_NAME,
                hint="the slot was changed by hand; the agent falls back to the other slot",
            )
        return InstalledBundle(
            manifest=manifest, directory=directory, source=directory, sha256=record.sha256, key_id=key
        )


def verify_extracted(directory: Path, trusted_keys: Sequence[Ed25519PublicKey]) -> tuple[Manifest, str]:
    """Check an extracted bundle as thoroughly as the ``.efb`` it came from; (manifest, signer key id)."""
    directory = Path(directory)
    try:
        manifest_bytes = (directory / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        raise MissingFile(f"{directory} has no {MANIFEST_NAME}", file=MANIFEST_NAME) from None
    try:
        signature = (directory / SIGNATURE_NAME).read_bytes()
    except FileNotFoundError:
        raise MissingSignature(f"{directory} has no {SIGNATURE_NAME}") from None
    key = verify_manifest_signature(manifest_bytes, signature, trusted_keys)
    manifest = parse_manifest(manifest_bytes)
    present = {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() or path.is_symlink()
    } - {MANIFEST_NAME, SIGNATURE_NAME}
    missing = sorted(manifest.files.keys() - present)
    if missing:
        raise MissingFile(f"{directory} lacks {missing[0]!r}, which the manifest lists", file=missing[0])
    extra = sorted(present - manifest.files.keys())
    if extra:
        raise ExtraFile(f"{directory} holds {extra[0]!r}, which the manifest does not list", file=extra[0])
    for name, entry in sorted(manifest.files.items()):
        path = directory / name
        if path.is_symlink():
            raise ExtraFile(f"{directory}/{name} is a link, not the file the bundle held", file=name)
        digest, size = sha256_file(path)
        if digest != entry.sha256 or size != entry.size:
            raise HashMismatch(
                f"{directory}/{name} changed on disk since it was extracted",
                file=name,
                expected=f"sha256 {entry.sha256[:16]}..., {entry.size} bytes",
                got=f"sha256 {digest[:16]}..., {size} bytes",
            )
    return manifest, key
