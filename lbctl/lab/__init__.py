"""`lbctl lab`: the whole system on one machine, in network namespaces joined by one bridge.

Mirrors the kubespray course topology (control plane .11, nodes .21+, MetalLB-style pool .50-.99),
renumbered from 192.168.56.0/24 to the benchmarking range 198.18.0.0/24 so nothing leaks off-host.
"""
