# One image for both roles: `annrec build ...` (index-builder) and `annrec worker` (worker).
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY schemas schemas
COPY query_engine query_engine
COPY adapters adapters
COPY index_builder index_builder
COPY worker worker
COPY tools tools
RUN pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
RUN useradd --create-home annrec && mkdir -p /data && chown annrec /data
USER annrec
WORKDIR /home/annrec
ENTRYPOINT ["annrec"]
CMD ["worker"]
