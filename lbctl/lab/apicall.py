"""Kubernetes API calls from inside a lab namespace, JSON over stdin/stdout.

Run as `ip netns exec lbctl-cp python -m lbctl.lab.apicall KUBECONFIG`: reads a JSON list of calls
{"method", "path", "body"?, "params"?, "content_type"?} (method "APPLY" = create, or merge-patch when
it exists) and prints a JSON list of {"status", "body"}. One process per batch: Python start-up, not the
API server, is what costs here. Synchronous stdlib HTTP keeps start-up small.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from lbctl.kube import config


def call(cfg: config.KubeConfig, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
         content_type: str = "application/json") -> tuple[int, Any]:
    url = cfg.server + path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {cfg.bearer()}", "Accept": "application/json",
        **({"Content-Type": content_type} if data else {})})
    ctx = cfg.ssl_context()
    try:
        with urllib.request.urlopen(req, context=ctx or None, timeout=30) as resp:
            return resp.status, _json(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except OSError as exc:
        return 0, {"message": str(exc)}


def apply(cfg: config.KubeConfig, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """Create in collection `path`, or merge-patch what exists: a PUT would have to repeat fields
    the server filled in (a Service's clusterIPs), a merge keeps them."""
    status, out = call(cfg, "POST", path, body)
    if status != 409:
        return status, out
    return call(cfg, "PATCH", f"{path}/{body['metadata']['name']}", body, content_type="application/merge-patch+json")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw.decode(errors="replace")[:2000]}


def main() -> None:
    cfg = config.from_kubeconfig(Path(sys.argv[1]))
    results = []
    for c in json.load(sys.stdin):
        if c["method"] == "APPLY":
            status, body = apply(cfg, c["path"], c["body"])
        else:
            status, body = call(cfg, c["method"], c["path"], c.get("body"), c.get("params"),
                                c.get("content_type", "application/json"))
        results.append({"status": status, "body": body})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
