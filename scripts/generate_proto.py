#!/usr/bin/env python3
"""Regenerate the Python code of crossgrad's wire API from ``proto/crossgrad/v1/*.proto``.

Run from anywhere, with the project's test extra installed (it pins grpcio-tools)::

    python scripts/generate_proto.py            # rewrites the stubs beside the .proto files
    python scripts/generate_proto.py --out DIR  # writes them under DIR instead (the staleness test)

It runs, from the repository's root, exactly::

    python -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto \\
        --grpc_python_out=proto proto/crossgrad/v1/*.proto

which writes ``crossgrad_pb2.py``, ``crossgrad_pb2.pyi`` and ``crossgrad_pb2_grpc.py`` beside the
``.proto``, importing as ``crossgrad.v1``. The output is deterministic for a given grpcio-tools
release, and the stubs embed that release's versions (the protobuf runtime check in
``*_pb2.py``, ``GRPC_GENERATED_VERSION`` in ``*_pb2_grpc.py``): so the script refuses to run with
any other grpcio-tools than the one ``pyproject.toml`` pins, and ``tests/test_proto.py`` fails when
the committed stubs differ from a fresh generation.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = PROTO_ROOT / "crossgrad" / "v1"
# The files protoc writes for each foo.proto, by suffix.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def pinned_grpcio_tools() -> str:
    """The grpcio-tools version pinned (``grpcio-tools==X``) in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"""["']grpcio-tools==([^"'\s;]+)["']""", text)
    if match is None:
        raise SystemExit("pyproject.toml pins no grpcio-tools==X; the stubs depend on its version")
    return match.group(1)


def installed_grpcio_tools() -> str | None:
    """The installed grpcio-tools version, or None when it is not installed."""
    try:
        return metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        return None


def proto_files() -> list[Path]:
    """The .proto files to compile, sorted (relative to the repository's root)."""
    return sorted(p.relative_to(ROOT) for p in PACKAGE_DIR.glob("*.proto"))


def stub_paths(out: Path) -> list[Path]:
    """The files protoc writes under ``out`` (``PROTO_ROOT`` for the committed ones)."""
    return [out / proto.relative_to("proto").parent / (proto.stem + suffix)
            for proto in proto_files() for suffix in GENERATED_SUFFIXES]


def command(out: Path) -> list[str]:
    """The protoc command writing the stubs under ``out`` (``proto`` for the committed ones)."""
    return [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={out}",
            f"--pyi_out={out}", f"--grpc_python_out={out}", *map(str, proto_files())]


def generate(out: Path) -> None:
    """Write the stubs under ``out`` (mirroring ``proto/``: ``out/crossgrad/v1/...``)."""
    wanted, found = pinned_grpcio_tools(), installed_grpcio_tools()
    if found != wanted:
        raise SystemExit(f"grpcio-tools {found or 'is not installed'}"
                         f"{'' if found is None else ' is installed'}; the stubs are generated "
                         f"with grpcio-tools=={wanted}, the version pyproject.toml pins (they "
                         f"embed it): pip install 'grpcio-tools=={wanted}'")
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(command(out), cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed ({result.returncode}):\n{result.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="write the stubs under this directory instead of proto/")
    args = parser.parse_args()
    out = PROTO_ROOT if args.out is None else args.out.resolve()
    generate(out)
    for path in stub_paths(out):
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
