"""Generate the BatchJobSchedule CRD: ``python -m batchop.api.crdgen [--cel] [--write | --check]``.

The Batch part of the schema is derived from the installed ``azure-batch`` SDK's models (see
:mod:`batchop.api.crd`); never edit the generated files by hand. Three are generated:

- ``crds/azurebatch.dev_batchjobschedules.yaml``: for every Kubernetes version (the local stack's 1.20 too);
- ``crds/cel/azurebatch.dev_batchjobschedules.yaml``: the same plus CEL rules (``x-kubernetes-validations``,
  e.g. ``spec.scheduleId`` immutable), for Kubernetes >= 1.25 only: older API servers, and kubectl's
  client-side validation against them, refuse the field;
- ``operator/batchop/api/spec_schema.json``: the ``spec`` schema alone, package data that validation and
  normalisation read at run time (:mod:`batchop.api.schema`) instead of loading the SDK's models.

Without options the default variant (or the CEL one with ``--cel``) goes to stdout; ``--write`` writes
all three files; ``--check`` exits 1 when any differs from what would be generated (for CI).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from batchop.api import schema
from batchop.api.crd import crd, spec_schema

CRDS_DIR = Path(__file__).resolve().parents[3] / "crds"
FILE_NAME = "azurebatch.dev_batchjobschedules.yaml"
CRD_PATH = CRDS_DIR / FILE_NAME
"""The CRD for every Kubernetes version, in a source checkout."""
CEL_CRD_PATH = CRDS_DIR / "cel" / FILE_NAME
"""The CRD with CEL rules, for Kubernetes >= 1.25."""
SCHEMA_PATH = Path(schema.schema_path())
"""The ``spec`` schema read at run time (package data of :mod:`batchop.api`)."""

HEADER = f"# {schema.GENERATED_NOTE}\n# {{variant}}\n"
_VARIANTS = {
    False: f"For any Kubernetes version. Apply with: kubectl apply -f crds/{FILE_NAME} (or kubectl apply -k crds/)",
    True: f"With CEL rules, for Kubernetes >= 1.25. Apply with: kubectl apply -f crds/cel/{FILE_NAME}",
}


class _Dumper(yaml.SafeDumper):
    """Block style, keys in declaration order, long strings unwrapped."""


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_presenter)


def render(*, cel: bool = False) -> str:
    """The CRD as YAML text, header included."""
    body = yaml.dump(crd(cel=cel), Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True)
    return HEADER.format(variant=_VARIANTS[cel]) + body


def targets(crds_dir: Path = CRDS_DIR, schema_path: Path = SCHEMA_PATH) -> dict[Path, str]:
    """Every generated file and the text it must have."""
    return {
        crds_dir / FILE_NAME: render(cel=False),
        crds_dir / "cel" / FILE_NAME: render(cel=True),
        schema_path: schema.dump(spec_schema()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batchop.api.crdgen", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write both CRD files and the packaged spec schema")
    group.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    parser.add_argument("--cel", action="store_true", help="print the variant with CEL rules (Kubernetes >= 1.25)")
    parser.add_argument("--dir", type=Path, default=CRDS_DIR, help="the crds directory (default: %(default)s)")
    parser.add_argument("--schema", type=Path, default=SCHEMA_PATH,
                        help="the packaged spec schema (default: %(default)s)")
    args = parser.parse_args(argv)
    files = targets(args.dir, args.schema)
    if args.write:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return 0
    if args.check:
        stale = [path for path, text in files.items()
                 if not path.exists() or path.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path} is out of date: run python -m batchop.api.crdgen --write", file=sys.stderr)
        return 1 if stale else 0
    sys.stdout.write(render(cel=args.cel))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
