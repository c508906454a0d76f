"""An exec credential plugin (a real process) authenticates lbctl's client to the real API server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import yaml

from lbctl.kube import config
from lbctl.kube.client import ApiError, Kube

PLUGIN = """#!{python}
import json, os
with open({log!r}, "a") as f:
    f.write("run\\n")
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {{"token": open({token!r}).read().strip()}}}}))
"""


def test_exec_plugin_token_reaches_the_api_server(control_plane, tmp_path: Path) -> None:
    token = tmp_path / "token"  # what an SSO helper would fetch; the plugin reads it on each run
    token.write_text(control_plane.tokens["admin"])
    plugin = tmp_path / "plugin"
    plugin.write_text(PLUGIN.format(python=sys.executable, log=str(tmp_path / "runs"), token=str(token)))
    plugin.chmod(0o755)
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sso",
        "clusters": [{"name": "cp", "cluster": {"server": control_plane.url,
                                                 "certificate-authority": str(control_plane.workdir / "apiserver.crt")}}],
        "users": [{"name": "sso", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                    "command": "./plugin", "interactiveMode": "Never"}}}],
        "contexts": [{"name": "sso", "context": {"cluster": "cp", "user": "sso"}}]}))

    async def whoami() -> list[str]:
        async with Kube(config.load(str(kc))) as kube:
            ns = await kube.get("/api/v1/namespaces/default")
            crds = await kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
            return [ns["metadata"]["name"], *sorted(c["metadata"]["name"] for c in crds["items"])]
    assert asyncio.run(whoami())[:1] == ["default"]
    assert (tmp_path / "runs").read_text() == "run\n"  # no expiry: one run serves every request

    out = subprocess.run([sys.executable, "-m", "lbctl.cli", "status", "-o", "json", "--kubeconfig", str(kc)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 1, 3), out.stderr
    assert json.loads(out.stdout)["kind"] == "Status"

    token.write_text("revoked")  # the plugin now hands out a token the server refuses

    async def refused() -> int:
        async with Kube(config.load(str(kc))) as kube:
            try:
                await kube.get("/api/v1/namespaces/default")
            except ApiError as exc:
                return exc.status
        return 200
    assert asyncio.run(refused()) == 401
