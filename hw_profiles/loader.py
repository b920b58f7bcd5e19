"""Find, read and validate hardware profiles, with errors that name the file, the field and the line.

The core is pure: ``parse_profile(text, source=...)`` turns YAML text into a ``HardwareProfile`` or
raises a ``ProfileError`` such as ``hw_profiles/foo.yaml: cpu.cores: Input should be greater than 0
(line 7)``. The shell around it finds files on the search path (every directory named in
``EDGEFLEET_PROFILES_DIR``, then the built-in one) and reads them. A profile lives in
``<name>.yaml``, and the file name must agree with the ``name`` field, so that a name always finds
exactly the file that defines it.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from hw_profiles.schema import HardwareProfile

PROFILES_DIR_ENV = "EDGEFLEET_PROFILES_DIR"
BUILTIN_PROFILES_DIR = Path(__file__).resolve().parent
PROFILE_SUFFIX = ".yaml"

_FIX_HINT = (
    "fix the file where the message points; `edgefleet profiles validate FILE` checks it again, "
    "and docs/hw-profiles.md describes every field"
)


@dataclass(frozen=True)
class ProfileProblem:
    """One thing wrong with a profile file."""

    field: str  # "cpu.cores", "runtimes[0].format"; empty when it is about the file as a whole
    message: str
    line: int | None = None  # 1-based line in the YAML file, when known
    column: int | None = None  # 1-based, for YAML syntax errors

    def describe(self) -> str:
        if self.field:
            where = f" (line {self.line})" if self.line is not None else ""
            return f"{self.field}: {self.message}{where}"
        if self.line is not None:
            column = f", column {self.column}" if self.column is not None else ""
            return f"line {self.line}{column}: {self.message}"
        return self.message


class ProfileError(Exception):
    """A profile that cannot be found or used. ``str()`` is a complete message for an operator."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        problems: Sequence[ProfileProblem] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.problems = tuple(problems)
        self.hint = hint

    @classmethod
    def in_file(cls, source: str, problems: Sequence[ProfileProblem]) -> ProfileError:
        """One line per problem, each starting with the file: ``foo.yaml: cpu.cores: ...``."""
        message = "\n".join(f"{source}: {problem.describe()}" for problem in problems)
        return cls(message, source=source, problems=problems, hint=_FIX_HINT)


# --- YAML -----------------------------------------------------------------------------------------

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ProfileLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A safe loader that refuses duplicate keys, which PyYAML would otherwise silently overwrite."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key; construct_mapping reports it properly
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found the key {key!r} twice; keep only one",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_ProfileLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _yaml_problem(exc: yaml.YAMLError) -> ProfileProblem:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        message = f"invalid YAML: {exc.problem}"
        if exc.context:
            message += f" ({exc.context})"
        return ProfileProblem("", message, mark.line + 1, mark.column + 1)
    return ProfileProblem("", f"invalid YAML: {exc}")


def _line_of(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The line of the deepest YAML node on ``loc`` (a missing key points at its parent)."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                    node, line = value_node, key_node.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _yaml_path_length(root: yaml.Node | None, loc: Sequence[int | str]) -> int:
    """How much of ``loc`` is a real path. Beyond a scalar, pydantic adds union member names."""
    node = root
    for depth, part in enumerate(loc):
        if isinstance(node, yaml.ScalarNode):
            return depth
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            node = None
    return len(loc)


# --- Pydantic errors -> problems -----------------------------------------------------------------


def format_field_path(loc: Sequence[int | str]) -> str:
    """``("runtimes", 0, "format")`` -> ``runtimes[0].format``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_fields_at(loc: Sequence[int | str]) -> list[str]:
    """The field names of the schema model found at ``loc``, for "did you mean" suggestions."""
    current: Any = HardwareProfile
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _item_type(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _item_type(annotation: Any) -> Any:
    """``list[X]`` -> X and ``X | None`` -> X, so a path can step through lists and optionals."""
    origin = get_origin(annotation)
    if origin is list:
        return _item_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return _item_type(members[0]) if len(members) == 1 else annotation
    return annotation


def _clean_message(error: Any) -> str:
    message = str(error["msg"])
    # pydantic prefixes the text of a ValueError raised in a validator; the operator needs only the text.
    message = message.removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        loc = error["loc"]
        known = _model_fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif known:
            message += f"; the fields here are {', '.join(known)}"
    return message


def _validation_problems(exc: ValidationError, root: yaml.Node | None) -> list[ProfileProblem]:
    problems: list[ProfileProblem] = []
    seen_fields: set[str] = set()
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        loc = loc[: _yaml_path_length(root, loc)]
        field = format_field_path(loc) or "(profile)"
        if field in seen_fields:  # a union reports once per member; the first says enough
            continue
        seen_fields.add(field)
        problems.append(ProfileProblem(field, _clean_message(error), _line_of(root, loc)))
    return problems


# --- The pure core --------------------------------------------------------------------------------


def parse_profile(
    text: str, *, source: str = "<profile>", expected_name: str | None = None
) -> HardwareProfile:
    """Validate YAML ``text`` as a profile; ``expected_name`` is the name its file name gives it."""
    try:
        data = yaml.load(text, Loader=_ProfileLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ProfileError.in_file(source, [_yaml_problem(exc)]) from None
    if data is None:
        problem = ProfileProblem("", "the file is empty; a profile is a mapping: name, cpu, runtimes, ...")
        raise ProfileError.in_file(source, [problem])
    if not isinstance(data, dict):
        found = type(data).__name__
        problem = ProfileProblem("", f"a profile is a mapping (name: ..., cpu: ...), not a {found}", 1)
        raise ProfileError.in_file(source, [problem])

    problems: list[ProfileProblem] = []
    profile: HardwareProfile | None = None
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, yaml.compose(text, Loader=_ProfileLoader)))
    name = data.get("name")
    if expected_name is not None and isinstance(name, str) and name != expected_name:
        line = _line_of(yaml.compose(text, Loader=_ProfileLoader), ("name",))
        message = (
            f"{name!r} does not match the file name {expected_name}{PROFILE_SUFFIX}; "
            f"rename the file to {name}{PROFILE_SUFFIX} or set name: {expected_name}"
        )
        problems.insert(0, ProfileProblem("name", message, line))
    if problems or profile is None:
        raise ProfileError.in_file(source, problems)
    return profile


# --- The shell: files and the search path ---------------------------------------------------------


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, so messages stay short."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def profile_dirs() -> list[Path]:
    """Where profiles are looked up, in order: ``$EDGEFLEET_PROFILES_DIR`` entries, then the built-ins."""
    dirs: list[Path] = []
    for entry in os.environ.get(PROFILES_DIR_ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        path = Path(entry).expanduser()
        if not path.is_dir():
            raise ProfileError(
                f"{PROFILES_DIR_ENV} names {entry!r}, which is not a directory",
                hint=f"create the directory, or correct or unset {PROFILES_DIR_ENV} "
                f"(directories separated by {os.pathsep!r})",
            )
        dirs.append(path)
    dirs.append(BUILTIN_PROFILES_DIR)
    return dirs


def find_profiles(dirs: Iterable[Path] | None = None) -> dict[str, Path]:
    """Profile name -> file, without reading the files. An earlier directory shadows a later one."""
    found: dict[str, Path] = {}
    for directory in profile_dirs() if dirs is None else dirs:
        for path in sorted(directory.glob(f"*{PROFILE_SUFFIX}")):
            if path.is_file():
                found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def _unknown_profile(name: str, known: list[str]) -> ProfileError:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(known) if known else "(none)"
    return ProfileError(
        f"unknown hardware profile {name!r}{guess}\nknown profiles: {listing}",
        hint=f"add your own as <name>{PROFILE_SUFFIX} in a directory listed in {PROFILES_DIR_ENV}",
    )


def profile_path(name: str) -> Path:
    """The file that defines profile ``name`` on the search path."""
    profiles = find_profiles()
    if name in profiles:
        return profiles[name]
    raise _unknown_profile(name, list(profiles))


def _looks_like_path(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) or "/" in value or os.sep in value


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A file for a profile name or a path: a ``Path``, or a string ending in .yaml or holding a slash."""
    if isinstance(name_or_path, Path) or _looks_like_path(name_or_path):
        return Path(name_or_path)
    return profile_path(name_or_path)


def load_profile_file(path: Path) -> HardwareProfile:
    """Read and validate one profile file; its file name must agree with its ``name``."""
    source = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{source}: no such profile file", source=source) from None
    except UnicodeDecodeError as exc:
        raise ProfileError.in_file(source, [ProfileProblem("", f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ProfileError(f"{source}: cannot read the file: {exc.strerror}", source=source) from None
    return parse_profile(text, source=source, expected_name=path.stem)


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """A profile by name (``raspberry-pi-5``, looked up on the search path) or by file path."""
    return load_profile_file(resolve_profile_path(name_or_path))


def list_profiles(directory: str | Path | None = None) -> list[HardwareProfile]:
    """Every profile on the search path (or only in ``directory``), sorted by name.

    All files are checked before anything is raised, so one error lists every broken file.
    """
    if directory is not None:
        path = Path(directory)
        if not path.is_dir():
            raise ProfileError(f"{display_path(path)}: not a directory of profiles")
        dirs = [path]
    else:
        dirs = profile_dirs()
    profiles: list[HardwareProfile] = []
    errors: list[ProfileError] = []
    for file in find_profiles(dirs).values():
        try:
            profiles.append(load_profile_file(file))
        except ProfileError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ProfileError(
            "\n".join(e.message for e in errors),
            problems=[p for e in errors for p in e.problems],
            hint=_FIX_HINT,
        )
    return sorted(profiles, key=lambda profile: profile.name)
