from lbctl.core.service import read_service


def svc(**spec):
    meta = spec.pop("meta", {})
    return {"metadata": {"name": "s", "namespace": "ns", "uid": "u", **meta},
            "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4"], **spec}}


def test_reads_lbctl_then_metallb_annotations():
    r = read_service(svc(meta={"annotations": {"metallb.universe.tf/address-pool": "old",
                                               "lbctl.io/allow-shared-ip": "k"}}))
    assert r.pool == "old" and r.sharing_key == "k"
    r = read_service(svc(meta={"annotations": {"metallb.io/loadBalancerIPs": "198.18.0.60"}}))
    assert r.requested_ips == ("198.18.0.60",)


def test_request_errors():
    assert "invalid" in read_service(svc(loadBalancerIP="nope")).error
    r = read_service(svc(meta={"annotations": {"lbctl.io/loadBalancerIPs": "198.18.0.1,198.18.0.2"}}))
    assert "more than one address of a family" in r.error
    r = read_service(svc(meta={"annotations": {"lbctl.io/loadBalancerIPs": "2001:db8::1"}}))
    assert "IPv6 but the Service's ipFamilies are IPv4" in r.error


def test_families_follow_policy():
    assert read_service(svc(ipFamilyPolicy="SingleStack", ipFamilies=["IPv6", "IPv4"])).families == (6,)
    r = read_service(svc(ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"]))
    assert r.families == (4, 6) and r.require_all_families
    r = read_service(svc(ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv6", "IPv4"]))
    assert r.families == (6, 4) and not r.require_all_families


def test_class_filter():
    assert read_service(svc()).wants(None)
    assert read_service(svc()).wants("x")
    assert read_service(svc(loadBalancerClass="x")).wants("x")
    assert not read_service(svc(loadBalancerClass="other")).wants("x")
    assert not read_service(svc(loadBalancerClass="other")).wants(None)
    assert not read_service(svc(type="ClusterIP")).wants(None)
