"""Plain HTTP GETs to the daemons' health and metrics endpoints (not the Kubernetes API: that is lbctl.kube)."""

from __future__ import annotations

import urllib.error
import urllib.request


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""
