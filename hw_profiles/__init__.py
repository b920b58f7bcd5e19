"""Hardware profiles: one YAML file per target, validated against a small schema.

Light on purpose (pydantic and PyYAML only): the edge agent imports it too.

>>> from hw_profiles import load_profile
>>> profile = load_profile("raspberry-pi-5")
>>> profile.default_format, profile.default_precision
(<ModelFormat.TFLITE: 'tflite'>, <Precision.INT8: 'int8'>)
"""

from hw_profiles.loader import (
    BUILTIN_PROFILES_DIR,
    PROFILE_SUFFIX,
    PROFILES_DIR_ENV,
    ProfileError,
    ProfileProblem,
    display_path,
    find_profiles,
    list_profiles,
    load_profile,
    load_profile_file,
    parse_profile,
    profile_dirs,
    profile_path,
    resolve_profile_path,
)
from hw_profiles.schema import (
    ARM_CPU_FEATURES,
    CPU_FEATURES,
    RUNTIME_FORMATS,
    X86_CPU_FEATURES,
    Accelerator,
    AcceleratorKind,
    Architecture,
    Cpu,
    HardwareProfile,
    ModelFormat,
    Precision,
    QuantizationConstraints,
    RuntimeChoice,
    RuntimeName,
    Tolerance,
)

__all__ = [
    "ARM_CPU_FEATURES",
    "BUILTIN_PROFILES_DIR",
    "CPU_FEATURES",
    "PROFILES_DIR_ENV",
    "PROFILE_SUFFIX",
    "RUNTIME_FORMATS",
    "X86_CPU_FEATURES",
    "Accelerator",
    "AcceleratorKind",
    "Architecture",
    "Cpu",
    "HardwareProfile",
    "ModelFormat",
    "Precision",
    "ProfileError",
    "ProfileProblem",
    "QuantizationConstraints",
    "RuntimeChoice",
    "RuntimeName",
    "Tolerance",
    "display_path",
    "find_profiles",
    "list_profiles",
    "load_profile",
    "load_profile_file",
    "parse_profile",
    "profile_dirs",
    "profile_path",
    "resolve_profile_path",
]
