"""How a session should run: threads, execution providers, devices, delegates, runtime extras.

Pure logic. The options come from the device's hardware profile (what this device has) laid over
the manifest's ``runtime.options`` (what the converter measured with). Keys a manifest may carry
in ``runtime.options``:

- ``threads``: intra-op threads (a positive integer);
- ``execution_providers`` (or ``providers``): ONNX Runtime providers in order of preference;
- ``devices``: OpenVINO devices in order of preference;
- ``delegates``: LiteRT delegates in order of preference (``edgetpu``, ``xnnpack``);
- anything else is a runtime-specific extra, passed to the backend (for example an OpenVINO
  property such as ``PERFORMANCE_HINT``); a backend notes the extras it does not understand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.runtimes.errors import RuntimeConfigError
from hw_profiles.schema import HardwareProfile, ModelFormat, RuntimeName
from models.bundle.manifest import Manifest

RUNTIME_FOR_FORMAT: Mapping[ModelFormat, RuntimeName] = {
    ModelFormat.ONNX: RuntimeName.ONNXRUNTIME,
    ModelFormat.TFLITE: RuntimeName.LITERT,
    ModelFormat.OPENVINO: RuntimeName.OPENVINO,
}

ExtraValue = str | int | float | bool
# Manifest keys that hold ordered lists, and the field each fills ("providers" is an alias).
_LIST_KEYS = {
    "execution_providers": "providers",
    "providers": "providers",
    "devices": "devices",
    "delegates": "delegates",
}


@dataclass(frozen=True)
class RuntimeOptions:
    threads: int | None = None
    providers: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    delegates: tuple[str, ...] = ()
    extra: Mapping[str, ExtraValue] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], *, source: str = "runtime.options") -> RuntimeOptions:
        """Parse a manifest's ``runtime.options`` (keys documented in this module)."""
        threads = options.get("threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise RuntimeConfigError(
                f"{source}: threads must be a positive integer, got {threads!r}",
                hint="fix the options, or let the device's hardware profile set the thread count",
            )
        lists: dict[str, tuple[str, ...]] = {"providers": (), "devices": (), "delegates": ()}
        extra: dict[str, ExtraValue] = {}
        for key, value in options.items():
            if key == "threads":
                continue
            if key in _LIST_KEYS:
                lists[_LIST_KEYS[key]] = _string_list(value, f"{source}.{key}")
            elif isinstance(value, str | int | float | bool):
                extra[key] = value
            else:
                raise RuntimeConfigError(
                    f"{source}.{key}: expected a string, number or boolean, got {type(value).__name__}",
                    hint="runtime extras are flat key/value pairs",
                )
        return cls(threads=threads, extra=extra, **lists)

    def overlay(self, other: RuntimeOptions) -> RuntimeOptions:
        """These options with every field ``other`` sets taking precedence (extras merged, other wins)."""
        return RuntimeOptions(
            threads=other.threads if other.threads is not None else self.threads,
            providers=other.providers or self.providers,
            devices=other.devices or self.devices,
            delegates=other.delegates or self.delegates,
            extra={**self.extra, **other.extra},
        )


def options_from_profile(profile: HardwareProfile, fmt: ModelFormat) -> RuntimeOptions:
    """What ``profile`` says about running ``fmt``: its thread count and its runtime choice for the format."""
    try:
        choice = profile.runtime_for(fmt)
    except KeyError:
        raise RuntimeConfigError(
            f"hardware profile {profile.name!r} has no runtime for {fmt.value} models",
            hint=f"install a bundle built for {profile.name} (edgefleet convert --profile {profile.name})",
        ) from None
    return RuntimeOptions(
        threads=profile.threads,
        providers=tuple(choice.execution_providers),
        devices=tuple(choice.devices),
        delegates=tuple(choice.delegates),
        extra=dict(choice.options),
    )


def resolve_runtime_options(manifest: Manifest, profile: HardwareProfile | None = None) -> RuntimeOptions:
    """The options a bundle runs with: the manifest's, overridden by the device's profile when given."""
    expected_runtime = RUNTIME_FOR_FORMAT[manifest.format]
    if manifest.runtime.name != expected_runtime:
        raise RuntimeConfigError(
            f"manifest of {manifest.name} {manifest.version}: runtime {manifest.runtime.name.value} "
            f"cannot run {manifest.format.value} models (that is {expected_runtime.value})",
            hint="the manifest is inconsistent: rebuild the bundle with `edgefleet convert`",
        )
    options = RuntimeOptions.from_mapping(manifest.runtime.options)
    if profile is not None:
        options = options.overlay(options_from_profile(profile, manifest.format))
    return options


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise RuntimeConfigError(
        f"{where}: expected a list of names, got {value!r}", hint="write it as a JSON list of strings"
    )
