"""`lbctl import kubespray|metallb`: turn a MetalLB setup into lbctl chart values or manifests (IPPools,
BGPPeers, BFDProfiles, and Secrets for BGP passwords, which chart values never hold).

The conversion is in lbctl/core/migrate*.py; this shell reads files (or the cluster), prints the result on
stdout and one line per refusal on stderr (`refused: WHAT: WHY`). Exit codes: 0 everything mapped,
3 something refused (the output is still printed), 2 unreadable or malformed input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..core.migrate import Conversion, InputError
from ..core.migrate_kubespray import convert_kubespray
from ..core.migrate_metallb import DEFAULT_NAMESPACE, convert_metallb
from ..kube import config
from ..kube.client import ApiError, Kube, KubeError

EXIT_OK, EXIT_INPUT, EXIT_REFUSED = 0, 2, 3
_GROUP = "metallb.io"
# kind, plural, versions to try (BGPPeer is served as v1beta2 since MetalLB 0.13.10, v1beta1 before)
_KINDS = (
    ("IPAddressPool", "ipaddresspools", ("v1beta1",)),
    ("L2Advertisement", "l2advertisements", ("v1beta1",)),
    ("BGPAdvertisement", "bgpadvertisements", ("v1beta1",)),
    ("BGPPeer", "bgppeers", ("v1beta2", "v1beta1")),
    ("Community", "communities", ("v1beta1",)),
    ("BFDProfile", "bfdprofiles", ("v1beta1",)),
    ("AddressPool", "addresspools", ("v1beta1",)),
)


class _Fail(Exception):
    """Input that cannot be read; the message names the file (and key)."""


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    k = sub.add_parser("kubespray", help="from kubespray group_vars (addons.yml, k8s-cluster.yml)",
                       description="Read kubespray's metallb_* variables (both the metallb_ip_range and the "
                                   "metallb_config styles) and print lbctl chart values or IPPools.")
    k.add_argument("files", nargs="+", metavar="FILE",
                   help="group_vars files or directories, merged like Ansible: a later file wins per variable")
    k.add_argument("--as", dest="as_", choices=("values", "manifests", "ippools"), default="values",
                   help="print chart values for helm -f (default) or manifests (IPPools, BGPPeers, BFDProfiles, "
                        "password Secrets; `ippools` is the old name of `manifests`)")
    k.set_defaults(func=run_kubespray)
    m = sub.add_parser("metallb", help="from MetalLB objects (files or the live cluster)",
                       description="Read MetalLB's IPAddressPool, L2Advertisement and BGP objects (and the pre-0.13 "
                                   "`config` ConfigMap) and print manifests or chart values.")
    m.add_argument("files", nargs="*", metavar="FILE", help="YAML files (multi-document, kind: List, ConfigMap)")
    m.add_argument("--from-cluster", action="store_true", help="read MetalLB's objects from the API server")
    m.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    m.add_argument("--context", help="kubeconfig context (default: current-context)")
    m.add_argument("--namespace", "-n", help=f"MetalLB's namespace (default with --from-cluster: {DEFAULT_NAMESPACE}; "
                                             "for files: every namespace found)")
    m.add_argument("--as", dest="as_", choices=("manifests", "ippools", "values"), default="manifests",
                   help="print manifests (default: IPPools, BGPPeers, BFDProfiles, password Secrets; `ippools` is "
                        "the old name) or chart values")
    m.set_defaults(func=run_metallb)


# -- kubespray

def run_kubespray(args: argparse.Namespace) -> int:
    try:
        variables, origin, paths = _read_group_vars(args.files)
        try:
            conv = convert_kubespray(variables)
        except InputError as exc:
            top = exc.where.split(".")[0].split("[")[0]
            raise _Fail(f"{origin.get(top, ', '.join(paths))}: {exc}") from None
    except _Fail as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.as_ != "values":
        for key, value in conv.values.items():
            for sub in value if isinstance(value, dict) else [None]:
                conv.warn(f"{key}{'.' + sub if sub else ''}: a chart value, not printed with --as manifests "
                          "(use --as values)")
    return _emit(conv, args.as_, f"lbctl import kubespray {' '.join(paths)}")


def _read_group_vars(files: list[str]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Merge variables from files (directories: their *.yml/*.yaml/*.json in name order, as Ansible loads
    group_vars/NAME/). Returns the variables, which file set each, and the files read."""
    variables: dict[str, Any] = {}
    origin: dict[str, str] = {}
    paths: list[str] = []
    for f in files:
        p = Path(f)
        members = sorted(x for x in p.iterdir() if x.suffix in (".yml", ".yaml", ".json")) if p.is_dir() else [p]
        for path in members:
            docs = [d for d in _read_yaml(str(path)) if d is not None]
            if len(docs) > 1:
                raise _Fail(f"{path}: holds {len(docs)} YAML documents; an Ansible vars file holds one")
            if docs and not isinstance(docs[0], dict):
                raise _Fail(f"{path}: top level is {type(docs[0]).__name__}, not a map of variables")
            for key, value in (docs[0] if docs else {}).items():
                variables[key] = value
                origin[str(key)] = str(path)
            paths.append(str(path))
    return variables, origin, paths


# -- MetalLB

def run_metallb(args: argparse.Namespace) -> int:
    if not args.files and not args.from_cluster:
        print("error: give FILEs or --from-cluster", file=sys.stderr)
        return EXIT_INPUT
    docs: list[Any] = []
    sources: list[str] = []
    notes: list[str] = []
    try:
        for f in args.files:
            for doc in _read_yaml(f):
                docs.append(doc)
                sources.append(f)
        if args.from_cluster:
            ns = args.namespace or DEFAULT_NAMESPACE
            live, notes = asyncio.run(_read_cluster(args.kubeconfig, args.context, ns))
            docs += live
            sources += ["cluster"] * len(live)
        try:
            conv = convert_metallb(docs, args.namespace)
        except InputError as exc:
            where = sources[exc.doc] if exc.doc is not None else "input"
            raise _Fail(f"{where}: {exc}") from None
    except _Fail as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    conv.notes[:0] = notes
    what = " ".join(args.files + (["--from-cluster"] if args.from_cluster else []))
    return _emit(conv, args.as_, f"lbctl import metallb {what}")


async def _read_cluster(kubeconfig: str | None, context: str | None, ns: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Every MetalLB object in `ns`; the legacy ConfigMap only when the CRDs are absent (MetalLB <= 0.12)."""
    try:
        cfg = config.load(kubeconfig, context)
        async with Kube(cfg, user_agent="lbctl-import") as kube:
            lists = await asyncio.gather(*(_list(kube, ns, *kind) for kind in _KINDS))
            cm = await _get(kube, f"/api/v1/namespaces/{ns}/configmaps/config")
    except (config.ConfigError, KubeError, OSError) as exc:
        raise _Fail(f"cluster: {exc}") from None
    found = {kind[0]: items for kind, items in zip(_KINDS, lists)}
    docs = [item for items in lists if items for item in items]
    notes: list[str] = []
    if found["IPAddressPool"] is None and found["AddressPool"] is None:  # no MetalLB CRDs served
        if cm is None:
            raise _Fail(f"cluster: MetalLB CRDs not installed (no ipaddresspools.{_GROUP} served) and no legacy "
                        f"ConfigMap {ns}/config (MetalLB <= 0.12): nothing to import")
        docs.append(dict(cm, apiVersion="v1", kind="ConfigMap"))
    elif cm is not None:
        notes.append(f"ConfigMap {ns}/config: skipped: MetalLB >= 0.13 reads only its custom resources")
    return docs, notes


async def _list(kube: Kube, ns: str, kind: str, plural: str, versions: Iterable[str]) -> list[dict[str, Any]] | None:
    """The kind's objects in ns, or None when the API server does not serve it (CRD not installed)."""
    for version in versions:
        try:
            items = (await kube.get(f"/apis/{_GROUP}/{version}/namespaces/{ns}/{plural}")).get("items") or []
        except ApiError as exc:
            if exc.status == 404:
                continue
            raise
        return [dict(i, apiVersion=f"{_GROUP}/{version}", kind=kind) for i in items]
    return None


async def _get(kube: Kube, path: str) -> dict[str, Any] | None:
    try:
        return await kube.get(path)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


# -- shared

def _read_yaml(path: str) -> list[Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Fail(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if text.lstrip().startswith("$ANSIBLE_VAULT"):
        raise _Fail(f"{path}: is Ansible Vault encrypted; decrypt it (ansible-vault view) and import the output")
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise _Fail(f"{path}{at}: not valid YAML: {problem}") from None


def _emit(conv: Conversion, as_: str, source: str) -> int:
    if as_ == "values":
        out = f"# lbctl chart values, generated by: {source}\n" + yaml.safe_dump(conv.chart_values(), sort_keys=False)
        for secret in conv.secrets:
            meta = secret["metadata"]
            conv.warn(f"Secret {meta['namespace']}/{meta['name']} (a BGP password) is not printed with --as values "
                      "(chart values hold no passwords): print it with --as manifests and apply it before helm install")
    else:
        out = f"# generated by: {source}\n" + yaml.safe_dump_all(conv.resources(), sort_keys=False,
                                                                   explicit_start=True)
    bgp_only = sorted(name for name, spec in conv.pools.items() if (spec.get("layer2") or {}).get("enabled") is False)
    if as_ != "values" and (conv.peers or bgp_only):
        # The manifests do not switch BGP on: without the chart's sidecar nothing would announce these pools.
        conv.warn("the speakers run BGP only with the chart value bgp.enabled=true: set it in helm install/upgrade"
                  + (f", or IPPools {', '.join(bgp_only)} (layer2.enabled: false) stay unannounced" if bgp_only else ""))
    sys.stdout.write(out)
    for line in conv.notes:
        print(f"note: {line}", file=sys.stderr)
    for line in conv.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for refusal in conv.refusals:
        print(refusal, file=sys.stderr)
    return EXIT_REFUSED if conv.refusals else EXIT_OK
