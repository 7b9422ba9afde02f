# Slim serving image: ONNX Runtime + FastAPI + the gearsight package, no torch (331 MB built on the
# local Debian base by tests/test_serve_container.py; torch alone is 1.2 GB installed).
#   scripts/build_image.sh                         # buildah, no daemon; makes a local base if needed
#   docker build -t gearsight-serve .              # where a Docker engine runs
#   docker run -p 8000:8000 -e GEARSIGHT_API_KEY=... -v $PWD/model.onnx:/models/model.onnx:ro gearsight-serve
# The CMD binds 0.0.0.0, so the server refuses to start without an API key (the environment variable,
# or --api-key-file on a mounted secret: --api-key shows in `ps`) unless given --insecure.
# The model is an exported .onnx (`gearsight export`): it carries classes and preprocessing itself.
ARG BASE=docker.io/library/python:3.11-slim

# -- build stage: a virtualenv with the serving dependencies and gearsight -------------------------
FROM ${BASE} AS build
# Behind a TLS-inspecting proxy, point this at its CA bundle mounted into the build (build_image.sh does).
ARG PIP_CERT=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# Serving dependencies at the exact versions of requirements.lock (one place for pins), no torch;
# `-c` pins their dependencies (starlette, pydantic, anyio, ...) to the lock too.
COPY requirements.lock ./
RUN python3 -m venv /opt/venv \
 && grep -E '^(numpy|pillow|onnxruntime|fastapi|uvicorn|httptools|uvloop|python-multipart|prometheus-client)==' \
      requirements.lock > requirements-serve.txt \
 && grep -E '^[A-Za-z0-9_.-]+==' requirements.lock > constraints.txt \
 && /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} -r requirements-serve.txt -c constraints.txt

# The package itself without its training dependencies (torch & co.): serving imports none of them.
# (README.md is pyproject's long description; an empty one will do here.)
COPY pyproject.toml ./
COPY src ./src
RUN touch README.md \
 && /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} --no-deps . \
 && /opt/venv/bin/pip uninstall --yes pip setuptools

# -- run stage: the base plus that virtualenv, nothing else -----------------------------------------
FROM ${BASE}
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --no-create-home gearsight
USER gearsight
WORKDIR /models
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2)"
# python -m gearsight.serve imports the serving code only (not every CLI subcommand).
ENTRYPOINT ["python3", "-m", "gearsight.serve"]
CMD ["/models/model.onnx", "--host", "0.0.0.0", "--port", "8000"]
