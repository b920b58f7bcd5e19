"""Database rows to REST responses: the one place that decides what a client sees of a row."""

from __future__ import annotations

from typing import Any

from fleet.api.schemas import (
    API_PREFIX,
    BundleDetail,
    BundleInfo,
    DeviceInfo,
    ModelDetail,
    ModelSummary,
    ModelVersionSummary,
)
from fleet.db.models import Bundle, Device
from fleet.registry.catalog import ModelGroup


def device_view(device: Device) -> DeviceInfo:
    return DeviceInfo(
        id=device.id,
        fleet=device.fleet,
        profile=device.profile,
        agent_version=device.agent_version,
        models=dict(device.models or {}),
        online=device.online,
        last_seen=device.last_seen,
        tags=device.tag_map,
        enrollment=device.enrollment,
        has_credentials=device.mqtt_password_hash is not None,
        latest_metrics=device.latest_metrics,
        created_at=device.created_at,
        updated_at=device.updated_at,
    )


def _bundle_fields(bundle: Bundle) -> dict[str, Any]:
    manifest = bundle.manifest or {}
    return {
        "sha256": bundle.sha256,
        "name": bundle.name,
        "version": bundle.version,
        "profile": bundle.profile,
        "format": bundle.format,
        "precision": bundle.precision,
        "size": bundle.size,
        "key_id": bundle.key_id,
        "created": bundle.created,
        "uploaded_at": bundle.uploaded_at,
        "uploaded_by": bundle.uploaded_by,
        "validation": dict(manifest.get("validation") or {}),
        "benchmark": dict(manifest.get("benchmark") or {}),
        "download_url": f"{API_PREFIX}/bundles/{bundle.sha256}",
    }


def bundle_view(bundle: Bundle) -> BundleInfo:
    return BundleInfo(**_bundle_fields(bundle))


def bundle_detail_view(bundle: Bundle) -> BundleDetail:
    return BundleDetail(**_bundle_fields(bundle), manifest=dict(bundle.manifest or {}))


def model_summary_view(group: ModelGroup) -> ModelSummary:
    return ModelSummary(
        name=group.name,
        latest_version=group.latest,
        versions=[v.version for v in group.versions],
        profiles=group.distinct("profile"),
        formats=group.distinct("format"),
        precisions=group.distinct("precision"),
        bundles=group.bundle_count,
    )


def model_detail_view(group: ModelGroup) -> ModelDetail:
    return ModelDetail(
        name=group.name,
        latest_version=group.latest,
        versions=[
            ModelVersionSummary(version=v.version, bundles=[bundle_view(b) for b in v.bundles])
            for v in group.versions
        ],
    )
