# syntax=docker/dockerfile:1
# The batchop operator image: `docker build -t ghcr.io/batchop/batchop:0.1.0 .`
# Two stages: the first builds a wheel and a virtualenv with every dependency; the second is a slim
# Python runtime with that virtualenv only (no pip cache, no compiler, no sources), run as a non-root user.
# Base pinned by version; pin by digest too in your registry mirror (python:3.11.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# Where the build stage gets the operator's dependencies: `index` (pip and the package index, the default) or
# `wheels` (only the wheels in the build context's wheels/ folder, pip included, no network and no pip or venv
# in the base image needed: how the local stack builds on a Debian base without a registry or an index; see
# devstack/product_images.py and docs/install.md).
ARG PIP_SOURCE=index

FROM ${PYTHON_IMAGE} AS sources
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
# The operator's packages only: the local Batch service and the dev stack (operator/localbatch,
# operator/devstack) are not part of the image.
COPY operator/batchop/ operator/batchop/
COPY operator/batchwire/ operator/batchwire/

FROM sources AS install-index
RUN python3 -m venv /opt/batchop \
 && /opt/batchop/bin/pip install --no-compile . \
 && /opt/batchop/bin/python -m pip uninstall -y pip setuptools

FROM sources AS install-wheels
COPY wheels/ /wheels/
# pip runs from its wheel (a zip file Python can execute), so the base needs neither pip nor ensurepip.
RUN python3 -m venv --without-pip /opt/batchop \
 && set -- /wheels/pip-*.whl \
 && /opt/batchop/bin/python "$1/pip" install --no-compile --no-index --find-links /wheels .

FROM install-${PIP_SOURCE} AS build
RUN /opt/batchop/bin/python -m compileall -q /opt/batchop/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="batchop" \
      org.opencontainers.image.description="Kubernetes operator for Azure Batch job schedules (kopf)" \
      org.opencontainers.image.source="https://github.com/batchop/batchop" \
      org.opencontainers.image.licenses="MIT"
# A fixed numeric non-root user, so that runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 65532 batchop \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin batchop
COPY --from=build /opt/batchop /opt/batchop
ENV PATH=/opt/batchop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp
USER 65532:65532
# 8080 liveness/readiness (/healthz), 8000 Prometheus metrics, 9443 admission webhook (HTTPS).
EXPOSE 8080 8000 9443
ENTRYPOINT ["batchop"]
CMD ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
