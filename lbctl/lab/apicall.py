"""Kubernetes API calls from inside a lab namespace, JSON over stdin/stdout.

Run as `ip netns exec lbctl-cp python -m lbctl.lab.apicall KUBECONFIG`: reads a JSON list of calls
{"method", "path", "body"?, "params"?, "content_type"?} (method "APPLY" = create, or merge-patch when
it exists) and prints a JSON list of {"status", "body"} (status 0: no answer, the error in body.message).
One process per batch, through the project's one client (lbctl.kube): its calls share one keep-alive
connection, so a batch pays one TLS handshake; importing aiohttp is the start-up cost.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from lbctl.kube import config
from lbctl.kube.client import MERGE, Kube, Unreachable


async def call(kube: Kube, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
               content_type: str = "application/json") -> tuple[int, Any]:
    try:
        status, text = await kube.send(method, path, params=params, body=body, content_type=content_type)
    except (Unreachable, ValueError) as exc:
        return 0, {"message": str(exc) or type(exc).__name__}
    return status, _json(text)


async def apply(kube: Kube, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """Create in collection `path`, or merge-patch what exists: a PUT would have to repeat fields
    the server filled in (a Service's clusterIPs), a merge keeps them."""
    status, out = await call(kube, "POST", path, body)
    if status != 409:
        return status, out
    return await call(kube, "PATCH", f"{path}/{body['metadata']['name']}", body, content_type=MERGE)


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"message": text[:2000]}


async def run(cfg: config.KubeConfig, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    async with Kube(cfg, user_agent="lbctl-lab") as kube:
        for c in calls:
            if c["method"] == "APPLY":
                status, body = await apply(kube, c["path"], c["body"])
            else:
                status, body = await call(kube, c["method"], c["path"], c.get("body"), c.get("params"),
                                          c.get("content_type", "application/json"))
            results.append({"status": status, "body": body})
    return results


def main() -> None:
    cfg = config.from_kubeconfig(Path(sys.argv[1]))
    json.dump(asyncio.run(run(cfg, json.load(sys.stdin))), sys.stdout)


if __name__ == "__main__":
    main()
