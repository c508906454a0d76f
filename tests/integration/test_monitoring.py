"""What the chart gives users to watch lbctl: the PrometheusRule and the Grafana dashboard ConfigMap.

Rendered with the pinned helm (no API server needed: `--api-versions` stands in for the Prometheus Operator's
CRDs), checked with Debian's promtool (`promtool check rules`, and `promtool test rules` on
tests/data/monitoring/rules_test.yaml), and every metric they name is looked up in the controller's and the
speaker's real registries, so a renamed metric fails here rather than on a user's dashboard.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry

from controller.leader import LeaderElector
from controller.metrics import Metrics as ControllerMetrics
from lbctl import assets
from lbctl.core.leader import Timing
from lbctl.kube.client import Kube
from lbctl.lab import k8sbin
from speaker.metrics import Metrics as SpeakerMetrics

CHART = str(assets.chart_dir())
ROOT = Path(__file__).resolve().parents[2]
RULES_TEST = ROOT / "tests" / "data" / "monitoring" / "rules_test.yaml"
MONITORING = "monitoring.coreos.com/v1"
RULES_ON = {"metrics": {"prometheusRule": {"enabled": True}}}
DASHBOARD_ON = {"metrics": {"grafanaDashboard": {"enabled": True}}}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's variables, as a query reaches Prometheus (so promtool can parse the dashboard's expressions)
GRAFANA_VARS = {"$__rate_interval": "1m", "$namespace": ".*", "$node": ".*"}


def helm_template(values: dict[str, Any], *api_versions: str, release: str = "lbctl",
                  namespace: str = "lbctl-system") -> subprocess.CompletedProcess[str]:
    args = [a for v in api_versions for a in ("--api-versions", v)]
    return subprocess.run([str(k8sbin.helm()), "template", release, CHART, "--namespace", namespace, *args,
                           "--values", "-"], input=json.dumps(values), capture_output=True, text=True)


def render(values: dict[str, Any], *api_versions: str) -> dict[tuple[str, str], dict]:
    res = helm_template(values, *api_versions)
    assert res.returncode == 0, res.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(res.stdout) if d}


def promtool(*args: str, cwd: Path) -> str:
    exe = shutil.which("promtool")
    if exe is None:  # CI installs it (tools/dev test); a missing checker must not pass as "nothing to check"
        pytest.fail("promtool not found: install Debian's `prometheus` package (tools/dev test does)")
    res = subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd)
    assert res.returncode == 0, f"promtool {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def rule_groups(values: dict[str, Any] = RULES_ON) -> list[dict[str, Any]]:
    rule = render(values, MONITORING)[("PrometheusRule", "lbctl")]
    return cast(list, rule["spec"]["groups"])


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"]}


def dashboard() -> dict[str, Any]:
    cm = render(DASHBOARD_ON)[("ConfigMap", "lbctl-dashboard")]
    return cast(dict, json.loads(cm["data"]["lbctl.json"]))


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def exported_names() -> set[str]:
    """Series names the controller and speaker expose, from their real registries (not a copied list)."""
    controller = ControllerMetrics()
    LeaderElector(cast(Kube, None), "ns", "lease", "me", Timing(), controller.registry)  # registers the leader gauges
    registries: list[CollectorRegistry] = [controller.registry, SpeakerMetrics().registry]
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {m.name + s for r in registries for m in r.collect() for s in suffixes[m.type]}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\blbctl_\w+", expr))


# --- off by default ------------------------------------------------------------------------------------------


def test_default_render_has_neither_rules_nor_dashboard() -> None:
    kinds = {(kind, name) for kind, name in render({}, MONITORING)}
    assert not [k for k in kinds if k[0] == "PrometheusRule"]
    assert ("ConfigMap", "lbctl-dashboard") not in kinds


def test_rules_need_the_prometheus_operator_api() -> None:
    """Enabled on a cluster without monitoring.coreos.com/v1: no PrometheusRule (it could not be installed)."""
    assert not [k for k in render(RULES_ON) if k[0] == "PrometheusRule"]
    assert [k for k in render(RULES_ON, MONITORING) if k[0] == "PrometheusRule"] == [("PrometheusRule", "lbctl")]


def test_lint_with_everything_on() -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                          "grafanaDashboard": {"enabled": True}}}
    res = subprocess.run([str(k8sbin.helm()), "lint", "--strict", CHART, "--values", "-"],
                         input=json.dumps(values), capture_output=True, text=True)
    assert res.returncode == 0 and "0 chart(s) failed" in res.stdout, res.stdout + res.stderr


# --- the rules -----------------------------------------------------------------------------------------------


def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yaml")
    assert "SUCCESS: 8 rules found" in promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """rules_test.yaml has, for each alert, a case where it fires and one where it must not."""
    cases = [t for test in yaml.safe_load(RULES_TEST.read_text())["tests"] for t in test["alert_rule_test"]]
    names = set(alerts(rule_groups()))
    assert names == {"LbctlAddressConflict", "LbctlAddressConflictsRecent", "LbctlSpeakerIsolated",
                     "LbctlSpeakerPeersMissing", "LbctlPoolNearlyExhausted", "LbctlNoControllerLeader",
                     "LbctlServicesPending", "LbctlBGPSessionDown"}
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == names
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == names


def test_every_alert_says_where_how_bad_and_waits() -> None:
    for name, rule in alerts(rule_groups()).items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert "for" in rule and re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "$labels." in rule["annotations"]["description"], f"{name}: the description locates nothing"
        assert 'namespace="lbctl-system"' in rule["expr"], f"{name}: not restricted to the release"
        assert "runbook_url" not in rule["annotations"], name  # only when metrics.prometheusRule.runbookUrl is set
        anchor = f"### {name}"
        assert anchor in (ROOT / "docs" / "monitoring.md").read_text(), \
            f"docs/monitoring.md has no runbook section {anchor!r}"


def test_rule_values() -> None:
    values = {"metrics": {"prometheusRule": {
        "enabled": True, "namespace": "monitoring", "labels": {"release": "kps"}, "alertLabels": {"team": "net"},
        "selector": 'job=~"lbctl-.*"', "poolUsage": 0.75, "pendingFor": "1h",
        "runbookUrl": "https://docs.example.com/lbctl/monitoring.md"}}}
    rule = render(values, MONITORING)[("PrometheusRule", "lbctl")]
    assert rule["metadata"]["namespace"] == "monitoring" and rule["metadata"]["labels"]["release"] == "kps"
    found = alerts(rule["spec"]["groups"])
    for name, r in found.items():
        assert r["labels"]["team"] == "net" and "severity" in r["labels"], name
        assert "namespace=" not in r["expr"] and 'job=~"lbctl-.*"' in r["expr"], name
        assert r["annotations"]["runbook_url"] == f"https://docs.example.com/lbctl/monitoring.md#{name.lower()}"
    assert found["LbctlPoolNearlyExhausted"]["expr"].rstrip().endswith(">= 0.75")
    assert "alert at 75%" in found["LbctlPoolNearlyExhausted"]["annotations"]["description"]
    assert found["LbctlServicesPending"]["for"] == "1h"
    unrestricted = alerts(rule_groups({"metrics": {"prometheusRule": {"enabled": True, "selector": ""}}}))
    assert "lbctl_services_pending{}" in unrestricted["LbctlServicesPending"]["expr"]


@pytest.mark.parametrize("bad, complaint", [
    ({"poolUsage": 1.5}, "/metrics/prometheusRule/poolUsage"),
    ({"poolUsage": 0}, "/metrics/prometheusRule/poolUsage"),
    ({"pendingFor": "15 minutes"}, "/metrics/prometheusRule/pendingFor"),
    ({"alertLabels": {"team": 3}}, "/metrics/prometheusRule/alertLabels/team"),
    ({"severity": "page"}, "additional properties 'severity' not allowed"),
])
def test_schema_rejects_bad_rule_values(bad: dict[str, Any], complaint: str) -> None:
    res = helm_template({"metrics": {"prometheusRule": {"enabled": True, **bad}}}, MONITORING)
    assert res.returncode != 0 and complaint in res.stderr, res.stderr


# --- the dashboard -------------------------------------------------------------------------------------------


def test_dashboard_configmap_for_the_grafana_sidecar() -> None:
    cm = render({"metrics": {"grafanaDashboard": {"enabled": True, "namespace": "grafana",
                                                  "annotations": {"grafana_folder": "Network"}}}})[
        ("ConfigMap", "lbctl-dashboard")]
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Network"}
    shipped = (Path(CHART) / "files" / "dashboard.json").read_text()
    assert json.loads(cm["data"]["lbctl.json"]) == json.loads(shipped)
    relabelled = render({"metrics": {"grafanaDashboard": {"enabled": True, "labels": {
        "grafana_dashboard": None, "dashboards": "lbctl"}}}})[("ConfigMap", "lbctl-dashboard")]
    assert relabelled["metadata"]["labels"]["dashboards"] == "lbctl"
    assert "grafana_dashboard" not in relabelled["metadata"]["labels"]


def test_dashboard_is_valid_and_templated() -> None:
    dash = dashboard()
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for p in panels(dash):
        if p["type"] == "row":
            continue
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE, p["title"]
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DATASOURCE, v["name"]
    # No data source of a particular Grafana is named anywhere (uids other than the variable).
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', json.dumps(dash))) - {"lbctl"}
    assert uids == {"${datasource}"}, uids
    titles = " | ".join(p["title"] for p in panels(dash)).lower()
    for wanted in ("pool", "pending", "allocations", "patch latency", "announced", "live vs registered",
                   "conflicts", "isolation", "arp/ndp", "responder limited", "heartbeat drops", "loop lag"):
        assert wanted in titles, f"no panel about {wanted!r}"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each panel's expression, with Grafana's variables filled in, is valid PromQL for promtool."""
    rules = []
    for p in panels(dashboard()):
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"{p['title']}: unknown variable in {expr}"
            rules.append({"record": f"panel_{p['id']}_{t['refId']}", "expr": expr})
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", "panels.yaml", cwd=tmp_path)


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = exported_names()
    assert {"lbctl_controller_leader", "lbctl_speaker_ip_conflicts_total", "lbctl_status_patch_seconds_bucket",
            "lbctl_speaker_loop_lag_seconds_bucket", "lbctl_pool_capacity"} <= exported
    used: dict[str, set[str]] = {}
    for name, rule in alerts(rule_groups()).items():
        used[f"alert {name}"] = metric_names(rule["expr"])
    for p in panels(dashboard()):
        for t in p.get("targets", []):
            used[f"panel {p['title']!r} {t['refId']}"] = metric_names(t["expr"])
    for v in dashboard()["templating"]["list"]:
        if v["type"] == "query":
            used[f"variable {v['name']}"] = metric_names(v["definition"])
    for where, names in used.items():
        assert names, f"{where}: names no lbctl metric"
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported by the controller or speaker"
