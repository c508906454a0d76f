"""Running `lbctl import` in-process for the import tests: exit code, parsed stdout, stderr lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lbctl.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data" / "import"


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err
        self.lines = err.splitlines()

    @property
    def docs(self) -> list[Any]:
        return [d for d in yaml.safe_load_all(self.out) if d is not None]

    @property
    def values(self) -> dict[str, Any]:
        return yaml.safe_load(self.out)

    def starting(self, prefix: str) -> list[str]:
        return [line for line in self.lines if line.startswith(prefix)]

    @property
    def refused(self) -> list[str]:
        return self.starting("refused: ")


def lbctl_import(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    code = main(["import", *map(str, argv)])
    out, err = capsys.readouterr()
    return Result(code, out, err)
