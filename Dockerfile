# syntax=docker/dockerfile:1
# One image for the five EHR Ledger services; the Kubernetes Deployment picks the
# service by its command, which is exactly the command the local real stack runs:
#   python -m services.identity.main        python -m services.consent.main
#   python -m services.record_store.main    python -m services.ledger_relay
#   python -m services.audit_analytics.main
# Build: docker build -t ehr-ledger:dev .   (skaffold.yaml builds it the same way)

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# -- builder: runtime dependencies only, hash-checked, pinned by requirements.lock --
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_PYTHON_DOWNLOADS=never
RUN python -m pip install uv==0.13.9
WORKDIR /src
COPY pyproject.toml requirements.lock ./
# The lock holds the dev group too; compile the runtime subset of it (same versions,
# same hashes) so test and lint tools never reach the image.
RUN uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
        -c requirements.lock -o runtime.lock -q \
 && python -m venv /opt/venv \
 && VIRTUAL_ENV=/opt/venv uv pip install --no-cache --require-hashes -r runtime.lock

# -- runtime: the virtualenv, the source tree and the contract artefacts, non-root --
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ehr-ledger" \
      org.opencontainers.image.description="EHR Ledger services (identity, consent, record-store, ledger-relay, audit-analytics)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 ehr \
 && useradd --system --uid 10001 --gid ehr --home-dir /app --shell /usr/sbin/nologin ehr
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# services/platform/chain/artifacts.py finds contracts/build relative to the source tree.
COPY --chown=root:root services/ services/
COPY --chown=root:root proto/gen/ proto/gen/
COPY --chown=root:root protocol/ehr_protocol/ protocol/ehr_protocol/
COPY --chown=root:root sdk/ehr_client/ sdk/ehr_client/
COPY --chown=root:root contracts/build/ contracts/build/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/proto/gen:/app/protocol:/app/sdk \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EHR_HOST=0.0.0.0 \
    EHR_PORT=8000 \
    EHR_DATA_DIR=/var/lib/ehr
RUN mkdir -p /var/lib/ehr && chown ehr:ehr /var/lib/ehr \
 && python -c "import services.platform.chain.artifacts as a; assert (a.BUILD_DIR / 'AuditAnchor.json').is_file()"
USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "services.identity.main"]
