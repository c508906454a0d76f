"""The Service status is the record: restarts and pool edits never move an assigned address."""

from __future__ import annotations

from tests import httpget
from tests.wait import wait_for


def _snapshot(lab):
    items = lab.kube.get(f"/api/v1/namespaces/{lab.ns}/services")["items"]
    return {s["metadata"]["name"]: ([i["ip"] for i in (s["status"].get("loadBalancer") or {}).get("ingress") or []],
                                    s["metadata"]["resourceVersion"]) for s in items}


def test_restart_changes_nothing_and_respects_offline_changes(lab, controller):
    lab.pool("rs", ["198.18.11.0/27"])
    for i in range(20):
        lab.service(f"s{i}")
    for i in range(20):
        lab.wait_ips(f"s{i}")
    # Free a hole at the bottom so a buggy restart would be tempted to renumber.
    lab.kube.delete(f"/api/v1/namespaces/{lab.ns}/services/s0")
    wait_for(lambda: "s0" not in _snapshot(lab), what="s0 gone")
    before = _snapshot(lab)
    controller.stop()
    lab.service("offline")  # created while the controller is down
    controller.start()
    new_ip = lab.wait_ips("offline")
    after = _snapshot(lab)
    unchanged = {k: v for k, v in after.items() if k != "offline"}
    assert unchanged == before  # same IPs and not even a rewrite (resourceVersion unchanged)
    assert new_ip == ["198.18.11.0"]  # the freed hole, not anybody's address
    assert "bootstrapped" in controller.log()


def test_pool_edit_keeps_assigned_addresses_and_warns(lab, controller):
    lab.pool("edit", ["198.18.12.0/28"])
    lab.service("keep")
    ip = lab.wait_ips("keep")
    assert ip == ["198.18.12.0"]
    lab.kube.patch(f"/apis/lbctl.io/v1alpha1/ippools/{lab.pool_name('edit')}", {"spec": {"addresses": ["198.18.12.8/29"]}})
    ev = lab.wait_event("keep", "IPRetained")
    assert "198.18.12.0 is no longer in any usable IPPool" in ev["message"] and ev["type"] == "Warning"
    assert lab.ips("keep") == ip
    lab.service("fresh")
    assert lab.wait_ips("fresh") == ["198.18.12.8"]
    controller.stop()
    controller.start()
    assert lab.ips("keep") == ip  # a restart does not move it either


def test_pool_delete_keeps_addresses_and_blocks_nothing_else(lab, controller):
    lab.pool("gone", ["198.18.13.0/28"])
    lab.service("orphan")
    ip = lab.wait_ips("orphan")
    lab.kube.delete(f"/apis/lbctl.io/v1alpha1/ippools/{lab.pool_name('gone')}")
    lab.wait_event("orphan", "IPRetained")
    assert lab.ips("orphan") == ip
    lab.service("waiting")
    assert "no usable IPPool" in lab.wait_event("waiting", "AllocationFailed")["message"]
    # Re-creating a pool that covers the address adopts it again; the orphan's IP is not handed out twice.
    lab.pool("gone", ["198.18.13.0/28"])
    assert lab.wait_ips("waiting") == ["198.18.13.1"]
    assert lab.ips("orphan") == ip


def test_health_and_metrics(controller, lab):
    assert httpget.get(f"http://127.0.0.1:{controller.port}/healthz")[0] == 200
    lab.pool("m", ["198.18.14.0/30"])
    lab.service("m1")
    lab.wait_ips("m1")
    want = f'lbctl_pool_assigned{{family="ipv4",pool="{lab.pool_name("m")}"}} 1.0'

    def scrape():
        text = controller.metrics()
        return text if want in text else None
    text = wait_for(scrape, what="pool metrics")
    assert "lbctl_allocations_total" in text and "lbctl_pool_capacity" in text
