"""Where BIRD 2 is (Debian bird2; tools/dev installs it for the tests) and the marks of tests that run it in
network namespaces."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

BIRD = shutil.which("bird") or "/usr/sbin/bird"
BIRDC = shutil.which("birdc") or "/usr/sbin/birdc"
PREFIX = os.environ.get("LBCTL_LAB_PREFIX", "lbctl-")  # namespaces are named after the lab's prefix
NEEDS_BIRD_AND_ROOT = [pytest.mark.skipif(not (Path(BIRD).exists() and Path(BIRDC).exists()),
                                          reason="BIRD 2 (Debian bird2) is not installed"),
                       pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]
