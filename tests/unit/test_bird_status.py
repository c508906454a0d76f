"""lbctl.core.bird_status: `birdc show protocols all` (BIRD 2.0.12, captured) read into session records."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from lbctl.core.bird_status import parse_protocols

NOW = dt.datetime(2026, 12, 5, 9, 0, 0, tzinfo=dt.timezone.utc)
CAPTURED = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
lbctl_device Device     ---        up     08:56:59.366  

lbctl_v4   Static     master4    up     08:56:59.366  
  Channel ipv4
    State:          UP
    Routes:         1 imported, 0 exported, 1 preferred

peer_tor1  BGP        ---        up     08:57:00.307  Established   
  BGP state:          Established
    Neighbor address: 198.18.1.1
    Neighbor AS:      64513
    Local AS:         64512
    Hold timer:       76.575/90
  Channel ipv4
    State:          UP
    Table:          master4
    Routes:         0 imported, 3 exported, 0 preferred
    Route change stats:     received   rejected   filtered    ignored   accepted
      Export updates:              1          0          0        ---          1
    BGP Next hop:   198.18.1.2

peer_tor2  BGP        ---        start  08:56:59.366  Connect       Socket: No route to host
  BGP state:          Connect
    Neighbor address: 198.18.1.9
  Channel ipv4
    State:          DOWN

peer_tor3  BGP        ---        start  2026-12-04 23:57:12.162  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: 2001:db8::1
    Connect delay:    0.445/1
    Last error:       Socket: Connection refused

peer_off   BGP        ---        down   09:30:00.000  
"""


def test_sessions_from_captured_output() -> None:
    got = {s.protocol: s for s in parse_protocols(CAPTURED, NOW)}
    assert list(got) == ["peer_tor1", "peer_tor2", "peer_tor3", "peer_off"]
    t1 = got["peer_tor1"]
    assert (t1.state, t1.up, t1.address, t1.exported, t1.last_error) == ("Established", True, "198.18.1.1", 3, "")
    assert t1.since == dt.datetime(2026, 12, 5, 8, 57, 0, 307000, tzinfo=dt.timezone.utc)
    assert (got["peer_tor2"].state, got["peer_tor2"].last_error) == ("Connect", "Socket: No route to host")
    t3 = got["peer_tor3"]
    assert (t3.state, t3.address, t3.last_error) == ("Active", "2001:db8::1", "Socket: Connection refused")
    assert t3.since == dt.datetime(2026, 12, 4, 23, 57, 12, 162000, tzinfo=dt.timezone.utc)
    # A time of day later than now is yesterday's; a protocol with no BGP state shows BIRD's protocol state.
    assert got["peer_off"].state == "Down" and got["peer_off"].since and got["peer_off"].since.day == 4


@given(st.text())
def test_never_raises_on_any_text(text: str) -> None:
    for s in parse_protocols(text, NOW):
        assert isinstance(s.state, str) and s.exported >= 0
