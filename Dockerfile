# qwen-gateway: one gateway process per container. Scale out with compose.yaml (several
# gateways, one Redis for the shared state, nginx in front); see README "Scaling out".
FROM python:3.13-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY recorder ./recorder
RUN pip install --no-cache-dir --root-user-action=ignore --prefix=/install .

FROM python:3.13-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    QWEN_PROXY_HOST=0.0.0.0 \
    QWEN_PROXY_PORT=8000 \
    QWEN_PROXY_LOG_FORMAT=json
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin qwen
COPY --from=build /install /usr/local
WORKDIR /app
# The recorded cassettes, for an offline demo (QWEN_PROXY_REPLAY=/app/cassettes); read-only.
COPY cassettes ./cassettes
USER qwen
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('QWEN_PROXY_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["qwen-proxy", "serve"]
