"""Verifying a bundle and extracting it under the agent's data directory.

Every bundle is verified (signature by a trusted key, layout, every file's hash) before a byte
of it is extracted; one that fails raises the verifier's own ``BundleError`` (with its exit code
and hint), never a half-installed model. A verified bundle lands in
``DATA_DIR/models/NAME/VERSION-SHA``: it is extracted into a staging directory first and renamed
into place, so a directory under ``models/`` is always complete.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from models.bundle import Manifest, extract_bundle


@dataclass(frozen=True)
class InstalledBundle:
    """A verified bundle, extracted and ready to open."""

    manifest: Manifest
    directory: Path
    source: Path
    sha256: str
    key_id: str

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version


class BundleInstaller:
    """Verifies bundles with the trusted keys and extracts them under ``data_dir``."""

    def __init__(self, data_dir: Path, trusted_keys: Sequence[Ed25519PublicKey]) -> None:
        if not trusted_keys:
            raise ValueError("at least one trusted key is needed to verify bundles")
        self.data_dir = Path(data_dir)
        self.trusted_keys = list(trusted_keys)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def install(self, bundle: Path) -> InstalledBundle:
        """Verify ``bundle`` and extract it; raises the verifier's ``BundleError`` when it is refused."""
        staging_root = self.data_dir / "staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = staging_root / secrets.token_hex(8)
        try:
            verified = extract_bundle(Path(bundle), staging, self.trusted_keys)
            manifest = verified.manifest
            target = self.models_dir / manifest.name / f"{manifest.version}-{verified.sha256[:16]}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                # The same bundle installed before (same sha256): replace it with the copy just
                # verified, rather than trust files that may have changed on disk since.
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return InstalledBundle(
            manifest=manifest,
            directory=target,
            source=verified.path,
            sha256=verified.sha256,
            key_id=verified.key_id,
        )
