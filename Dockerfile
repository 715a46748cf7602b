# syntax=docker/dockerfile:1.7
# The scoring service. The default target (`runtime`) is the image Render runs (render.yaml); the
# `lambda` target is the same service as an AWS Lambda container image (docs/deploy.md).
#
# No Docker engine runs in the test job, so tests/delivery/test_image.py runs this file's own
# `uv sync`/`uv export` lines and its CMD and HEALTHCHECK on the host; a change here is tested there.

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# Python and uv, nothing of the project.
FROM python:3.11-slim AS base
COPY --from=uv /uv /uvx /usr/local/bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app

# Builder: the promoted model. `bootstrap` leaves a committed model/ untouched and trains one only
# when model/ holds none; the runtime stages copy model/ from here and nothing else.
FROM base AS model
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-install-project --no-dev --extra pipeline
COPY . .
RUN /app/.venv/bin/python -m pipeline bootstrap

# AWS Lambda: `docker build --target lambda .`; the handler is service.lambda_handler.handler.
# numpy's own test suites (17 MB) are dropped: the package stays far below Lambda's 250 MB
# unzipped limit, so the same folder also deploys as a zip (docs/deploy.md).
FROM public.ecr.aws/lambda/python:3.11 AS lambda
ENV UV_COMPILE_BYTECODE=1 \
    UV_NO_INSTALLER_METADATA=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
RUN --mount=from=uv,source=/uv,target=/bin/uv \
    --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv export --locked --no-emit-project --no-dev --extra serve --output-file /tmp/requirements.txt && \
    uv pip install --no-deps --requirements /tmp/requirements.txt --target "${LAMBDA_TASK_ROOT}" && \
    rm /tmp/requirements.txt && \
    find "${LAMBDA_TASK_ROOT}/numpy" -depth -type d -name tests -exec rm -rf {} +
COPY service ${LAMBDA_TASK_ROOT}/service
COPY --from=model /app/model ${LAMBDA_TASK_ROOT}/model
ENV MODEL_DIR=${LAMBDA_TASK_ROOT}/model
CMD ["service.lambda_handler.handler"]

# Render (the default target): the serve extra only, installed from uv.lock before the code is
# copied, so a code change reuses the dependency layer. No XGBoost, SciPy, pandas, scikit-learn or
# DVC. numpy's own test suites go, as in the lambda stage.
FROM base AS runtime
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-install-project --no-dev --extra serve && \
    find "${UV_PROJECT_ENVIRONMENT}"/lib/python3*/site-packages/numpy -depth -type d -name tests -exec rm -rf {} +
RUN groupadd --system --gid 10001 app && \
    useradd --system --no-log-init --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY service ./service
COPY --from=model /app/model ./model
# HOST: every interface inside the container. PORT is left unset: Render sets it (10000), and the
# service falls back to 8000 without it.
ENV PATH="/app/.venv/bin:${PATH}" \
    HOST=0.0.0.0 \
    MODEL_DIR=/app/model
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "service"]
