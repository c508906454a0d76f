"""Exit codes shared by every `lbctl` command (documented in docs/cli.md)."""

OK = 0         # healthy / the answer is the good one
ATTENTION = 1  # something needs attention; the reasons are printed on stderr
USAGE = 2      # bad arguments or configuration: bad kubeconfig, API server unreachable or refusing us
CONFLICT = 3   # an address is claimed by more than one node (split brain)
