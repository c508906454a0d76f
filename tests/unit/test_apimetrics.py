"""benchmarks.apimetrics: the API server's /metrics read into per-phase figures (the difference of two scrapes)."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks import apimetrics

SCRAPE = """# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{{verb="POST",resource="services",subresource="",le="0.05"}} {a}
apiserver_request_duration_seconds_bucket{{verb="POST",resource="services",subresource="",le="0.1"}} {b}
apiserver_request_duration_seconds_bucket{{verb="POST",resource="services",subresource="",le="0.2"}} {c}
apiserver_request_duration_seconds_bucket{{verb="POST",resource="services",subresource="",le="+Inf"}} {d}
apiserver_request_duration_seconds_sum{{verb="POST",resource="services",subresource=""}} {s}
apiserver_request_duration_seconds_count{{verb="POST",resource="services",subresource=""}} {d}
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds_sum 0.5
go_gc_duration_seconds_count {gc}
"""


def test_a_phase_is_the_difference_of_two_scrapes_and_its_quantiles_interpolate_in_buckets() -> None:
    before = apimetrics.parse(SCRAPE.format(a=10, b=10, c=10, d=10, s=0.1, gc=3))
    after = apimetrics.parse(SCRAPE.format(a=60, b=90, c=108, d=110, s=6.1, gc=5))
    key = (apimetrics.REQUESTS, ("POST", "services", ""))
    phase = after.histograms[key].minus(before.histograms[key])
    assert phase.count == 100 and math.isclose(phase.total, 6.0)
    assert math.isclose(phase.quantile(0.5), 0.05)  # 50 of 100 at or below 0.05 s
    assert math.isclose(phase.quantile(0.9), 0.1 + 0.1 * 10 / 18)  # rank 90: 10 into the 18 between 0.1 and 0.2
    assert phase.above(0.2) == 2
    lines = apimetrics.report("churn", before, after, 10.0)
    assert any("POST services" in line and "10.0/s" in line and "mean   60.0 ms" in line for line in lines)
    assert any("2 GC cycles (5.0 s apart)" in line for line in lines)


def test_gc_cycles_are_read_from_a_gctrace_log(tmp_path: Path) -> None:
    log = tmp_path / "kube-apiserver.log"
    log.write_text("I1204 something else\n"
                   "gc 41 @12.503s 3%: 0.11+1890+0.05 ms clock, 0.2+10/940/1.1+0.1 ms cpu, 581->590->321 MB, "
                   "600 MB goal, 2 P\n")
    assert apimetrics.gc_cycles(log) == [(12.503, 0.11 + 1890 + 0.05, 581, 321)]


def test_a_slow_full_list_in_a_phase_is_pointed_out() -> None:
    text = ('# TYPE apiserver_request_duration_seconds histogram\n'
            'apiserver_request_duration_seconds_bucket{{verb="LIST",resource="services",subresource="",le="+Inf"}} {n}\n'
            'apiserver_request_duration_seconds_sum{{verb="LIST",resource="services",subresource=""}} {s}\n'
            'apiserver_request_duration_seconds_count{{verb="LIST",resource="services",subresource=""}} {n}\n')
    before, after = apimetrics.parse(text.format(n=1, s=0.8)), apimetrics.parse(text.format(n=9, s=7.2))
    assert any("slow full LISTs" in line and "LIST services x8 (mean 800 ms)" in line
               for line in apimetrics.report("churn", before, after, 60.0))
