# One image for lbctl, lbctl-controller and lbctl-speaker.
#
#   podman build -t lbctl .            (docker build works the same)
#
# Build arguments:
#   BASE    a Python >= 3.11 image whose python3 has the venv module (default python:3.11-slim).
#           Builder and runtime use the same base, so the venv's interpreter path is valid in both.
#   WHEELS  install only from the wheels in this directory inside the build (offline builds), e.g.
#           podman build --network none -v "$PWD/wheels:/wheels:ro" --build-arg WHEELS=/wheels .
#           The directory must hold every dependency and setuptools (the build backend).
#
# The lab builds it with lbctl.lab.images from the installed files, so a pip-installed lbctl can too: a wheel
# ships this file, pyproject.toml and README.md as lbctl/buildctx/, and the context is assembled in the layout
# below (pyproject.toml, README.md, deploy/, lbctl/, controller/, speaker/).
#
# The default user is 65532 (non-root). The speaker's pod spec runs it as uid 0 with only NET_RAW.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG WHEELS=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/lbctl
WORKDIR /src
COPY pyproject.toml README.md ./
COPY deploy ./deploy
COPY lbctl ./lbctl
COPY controller ./controller
COPY speaker ./speaker
# The venv ships no pip or setuptools: nothing installs at run time, and they only widen the image.
# The import check runs from /: the checkout in /src would shadow the installed lbctl package.
RUN set -eu; \
    pip=/opt/lbctl/bin/pip; \
    offline=${WHEELS:+--no-index --find-links=$WHEELS}; \
    $pip wheel $offline --no-deps --wheel-dir /tmp/dist . ; \
    $pip install $offline /tmp/dist/lbctl-*.whl; \
    $pip uninstall --yes pip setuptools; \
    cd / && /opt/lbctl/bin/python -c 'import lbctl.assets, lbctl.controller.main, lbctl.speaker.main'

FROM ${BASE}
# BIRD 2 for the BGP sidecar (speaker/bgpd.py; docs/bgp.md says why BIRD): Debian's bird2, unless the base
# already has it (the lab's offline base image, built with --network none, brings it in). BIRD's own service
# files are not used: the sidecar starts it in the foreground. An image that cannot get it still builds for
# layer 2 and says so here; its BGP sidecar then stops with "bird: not found".
RUN set -eu; \
    if ! command -v bird >/dev/null; then \
        if apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bird2; then \
            rm -rf /var/lib/apt/lists/* /etc/bird; \
        else echo "WARNING: bird2 could not be installed: BGP mode will not work with this image" >&2; fi; \
    fi
COPY --from=build /opt/lbctl /opt/lbctl
ENV PATH=/opt/lbctl/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
CMD ["lbctl", "--help"]
