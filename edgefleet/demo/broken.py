"""The broken release: v2's bundles, their weights damaged after the golden outputs were recorded.

For each profile, v2's bundle is verified and extracted, its model damaged in place
(``edgefleet.demo.damage``), and everything repacked as v3 and signed with the release key. The
signature, the hashes, the manifest's validation figures and the golden outputs are all in
order: only the model no longer computes what the golden file says it does. Nothing on the
server can tell; the device's golden check, run before the new version serves, does.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from edgefleet.demo.damage import Damage, damage_model
from edgefleet.demo.layout import DemoLayout
from edgefleet.demo.releases import Release
from edgefleet.demo.settings import MODEL

NOTE = "weights damaged after the golden outputs were recorded"


def broken_release(
    source: Release, version: str, layout: DemoLayout, private_key: Path, public_key: Path
) -> tuple[Release, dict[str, Damage]]:
    from models.bundle import (
        build_manifest_files,
        extract_bundle,
        load_private_key,
        load_public_key,
        pack_bundle,
    )

    signer = load_private_key(private_key)
    trusted = [load_public_key(public_key)]
    directory = layout.release_dir(version)
    if directory.exists():  # derived in a second from v2: always made afresh
        shutil.rmtree(directory)
    work = directory / "work"
    bundles: dict[str, Path] = {}
    damages: dict[str, Damage] = {}
    try:
        for profile, bundle in source.bundles.items():
            unpacked = work / profile
            manifest = extract_bundle(bundle, unpacked, trusted).manifest
            damages[profile] = damage_model(unpacked, manifest.model_file)
            roles = {name: (unpacked / name, entry.role) for name, entry in manifest.files.items()}
            labels = {**manifest.labels, "demo": f"{NOTE} (from {source.version})"}
            damaged = manifest.model_copy(
                update={
                    "version": version,
                    "files": build_manifest_files(roles),
                    "labels": labels,
                    "created": datetime.now(UTC),
                }
            )
            out = directory / f"{MODEL}-{version}-{profile}.efb"
            bundles[profile] = pack_bundle(out, damaged, {n: p for n, (p, _) in roles.items()}, signer)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (directory / "damage.json").write_text(
        json.dumps(
            {
                "from": source.version,
                "note": NOTE,
                "damage": {profile: d.describe() for profile, d in damages.items()},
            },
            indent=1,
        )
        + "\n"
    )
    return Release(version, bundles, directory, NOTE), damages
