"""Regenerate the Python wire types from proto/ (the one way they are produced).

    python scripts/gen_proto.py          # rewrite pouch/v1/
    python scripts/gen_proto.py --check  # exit 1 if the committed code is stale

Output: ``pouch/v1/*_pb2.py`` and ``*_pb2_grpc.py`` with their mypy stubs. The
generator versions are pinned in pyproject.toml so output is byte-for-byte stable.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("pouch") / "v1"
INIT_FILES = {
    Path("pouch") / "__init__.py": '"""Generated wire types of the Pouch contract (proto/)."""\n',
    PACKAGE_DIR / "__init__.py": '"""Generated from proto/pouch/v1 by scripts/gen_proto.py."""\n',
    Path("pouch") / "py.typed": "",
}


def generate(out: Path) -> None:
    sources = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto")
    )
    well_known = str(resources.files("grpc_tools") / "_proto")
    plugins = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path, text in INIT_FILES.items():
        (out / path).write_text(text)


def generated_files(base: Path) -> set[Path]:
    return {
        p.relative_to(base)
        for p in (base / "pouch").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, actual = generated_files(fresh), generated_files(ROOT)
        stale = sorted(
            str(p)
            for p in expected | actual
            if p not in expected
            or p not in actual
            or not filecmp.cmp(fresh / p, ROOT / p, shallow=False)
        )
    if stale:
        print("generated protobuf code is stale; run python scripts/gen_proto.py:", file=sys.stderr)
        for name in stale:
            print(f"  {name}", file=sys.stderr)
        return 1
    print("generated protobuf code is up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    options = parser.parse_args()
    if options.check:
        return check()
    target = ROOT / "pouch"
    if target.exists():
        shutil.rmtree(target)
    generate(ROOT)
    print(f"generated {len(generated_files(ROOT))} files under pouch/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
