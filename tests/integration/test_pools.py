"""IPPool validation: schema rejects malformed input early, the controller reports the rest."""

from __future__ import annotations

import pytest

from lbctl.kube.client import ApiError
from tests.integration.conftest import POOLS
from tests.wait import wait_for


@pytest.mark.parametrize("address", ["banana", "198.18.0.1/40", "198.18.0.1-", "1.2.3.4.5"])
def test_schema_rejects_malformed_addresses(lab, address):
    with pytest.raises(ApiError) as err:
        lab.kube.create(POOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool",
                                "metadata": {"name": f"{lab.ns}-bad"}, "spec": {"addresses": [address]}})
    assert err.value.status == 422 and "spec.addresses" in err.value.message


def test_schema_requires_addresses(lab):
    with pytest.raises(ApiError) as err:
        lab.kube.create(POOLS, {"apiVersion": "lbctl.io/v1alpha1", "kind": "IPPool",
                                "metadata": {"name": f"{lab.ns}-empty"}, "spec": {"addresses": []}})
    assert err.value.status == 422


def test_semantically_invalid_pool_is_reported_and_hands_out_nothing(lab):
    lab.pool("rev", ["198.18.2.20-198.18.2.10"])
    cond = wait_for(lambda: lab.pool_ready("rev"), what="Ready condition")
    assert cond["status"] == "False" and cond["reason"] == "Invalid"
    assert "198.18.2.20-198.18.2.10" in cond["message"] and "reversed" in cond["message"]
    ev = lab.wait_event(lab.pool_name("rev"), "Invalid", ns="default")
    assert ev["type"] == "Warning"
    lab.service("s", annotations={"lbctl.io/address-pool": lab.pool_name("rev")})
    ev = lab.wait_event("s", "AllocationFailed")
    assert "is not usable (Invalid" in ev["message"]
    assert lab.ips("s") == []


def test_overlap_marks_the_newer_pool_and_names_the_other(lab):
    lab.pool("first", ["198.18.2.0/28"])
    wait_for(lambda: (lab.pool_ready("first") or {}).get("status") == "True", what="first pool Ready")
    lab.pool("second", ["198.18.2.8-198.18.2.40"])
    cond = wait_for(lambda: lab.pool_ready("second"), what="second pool condition")
    assert cond["status"] == "False" and cond["reason"] == "Overlap"
    assert lab.pool_name("first") in cond["message"] and "198.18.2.8-198.18.2.40" in cond["message"]
    assert lab.pool_ready("first")["status"] == "True"


def test_status_counts_and_printer_columns(lab):
    lab.pool("cnt", ["198.18.2.0/30", "2001:db8:2::/126"], avoidBuggyIPs=True)
    lab.service("one")
    assert lab.wait_ips("one") == ["198.18.2.1"]  # .0 is skipped

    def counted():
        st = lab.pool_obj("cnt").get("status", {})
        return st if st.get("assigned") == 1 else None
    st = wait_for(counted, what="pool status with 1 assigned")
    assert st["ipv4"] == {"capacity": "3", "assigned": 1, "available": "2"}
    assert st["ipv6"] == {"capacity": "4", "assigned": 0, "available": "4"}
    crd = lab.kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ippools.lbctl.io")
    cols = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols[:1] == ["Addresses"] and {"Assigned", "Available", "Age"} <= set(cols)
