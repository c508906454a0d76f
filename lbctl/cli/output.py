"""-o table|json|yaml: every read command builds one versioned document and renders it one of three ways.

JSON and YAML print the document as is, so its shape is the interface scripts rely on (docs/cli.md);
the table is for people and may change.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from ..core.timestamps import rfc3339

API_VERSION = "lbctl.io/cli/v1"
FORMATS = ("table", "json", "yaml")


def add_output_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=FORMATS, default="table",
                   help="table for people; json or yaml: a stable document (apiVersion lbctl.io/cli/v1)")


def document(kind: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, **fields}


def emit(doc: Mapping[str, Any], fmt: str, table: Callable[[Mapping[str, Any]], str]) -> None:
    if fmt == "json":
        text = json.dumps(doc, indent=2)
    elif fmt == "yaml":
        text = yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False).rstrip("\n")
    else:
        text = table(doc)
    print(text)


def attention(command: str, reasons: list[str]) -> None:
    """The reasons behind exit code 1/3, on stderr so stdout stays the document."""
    if reasons:
        print(f"{command}: needs attention:", file=sys.stderr)
        for r in reasons:
            print(f"  - {r}", file=sys.stderr)


def iso(t: dt.datetime | None) -> str | None:
    return rfc3339(t) if t else None
