"""Regenerate ``inference_pb2.py``/``.pyi`` and ``inference_pb2_grpc.py`` from ``inference.proto``.

Run ``python -m edge_agent.proto.generate`` after editing the ``.proto`` (it needs grpcio-tools, a
dev dependency; the agent itself only needs the committed output, protobuf and grpcio). Then run
``pytest tests/unit/test_serving_proto.py``, which compares every message with tritonclient's.

Two rewrites follow protoc, each for a reason:

* The messages live in a private descriptor pool, not protobuf's default one. tritonclient
  registers the same ``inference.*`` names in the default pool, and a process that holds both
  (a test, a benchmark, an application that also talks to Triton) would otherwise fail to import
  the second with "duplicate symbol". The wire format does not depend on the pool.
* The grpc module imports the messages by their package path (protoc writes a top-level
  ``import inference_pb2``), and is marked for mypy to skip, as it carries no annotations.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "inference.proto"
MODULE = "inference_pb2"
PACKAGE = "edge_agent.proto"

_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "# A private pool: tritonclient registers the same inference.* names in the default one.\n"
    "POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = POOL.AddSerializedFile("
)


def generate(out_dir: Path = HERE) -> list[Path]:
    """Run protoc on ``inference.proto`` into ``out_dir`` and apply the rewrites; return the files written."""
    from grpc_tools import protoc  # a dev dependency: imported only when regenerating

    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO.parent}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    messages = out_dir / f"{MODULE}.py"
    service = out_dir / f"{MODULE}_grpc.py"
    stubs = out_dir / f"{MODULE}.pyi"
    messages.write_text(rewrite_messages(messages.read_text()))
    stubs.write_text(rewrite_stubs(stubs.read_text()))
    service.write_text(rewrite_service(service.read_text()))
    return [messages, stubs, service]


def rewrite_messages(source: str) -> str:
    """Register the file in a private descriptor pool, under the module's full import path."""
    if _DEFAULT_POOL not in source:
        raise SystemExit("protoc's output changed shape: update edge_agent/proto/generate.py")
    source = source.replace(_DEFAULT_POOL, _PRIVATE_POOL)
    return source.replace(f"'{MODULE}', _globals)", f"'{PACKAGE}.{MODULE}', _globals)")


def rewrite_stubs(source: str) -> str:
    """Declare the private pool in the type stubs too."""
    declaration = "DESCRIPTOR: _descriptor.FileDescriptor\n"
    if declaration not in source:
        raise SystemExit("protoc's .pyi output changed shape: update edge_agent/proto/generate.py")
    pool = "from google.protobuf import descriptor_pool as _descriptor_pool\n"
    return pool + source.replace(declaration, declaration + "POOL: _descriptor_pool.DescriptorPool\n")


def rewrite_service(source: str) -> str:
    """Import the messages by package path, and tell mypy the module is generated."""
    plain_import = f"import {MODULE} as inference__pb2"
    if plain_import not in source:
        raise SystemExit("protoc's grpc output changed shape: update edge_agent/proto/generate.py")
    source = source.replace(plain_import, f"from {PACKAGE} import {MODULE} as inference__pb2")
    return "# mypy: ignore-errors\n" + source


if __name__ == "__main__":
    for path in generate():
        sys.stdout.write(f"wrote {path}\n")
