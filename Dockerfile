# telegen as a privileged sidecar / DaemonSet container. Build and run (podman;
# docker takes the same arguments, without the podman-only global flags):
#   podman build -t telegen .
#   podman run --rm --privileged --pid=host \
#     -v /sys/kernel/debug:/sys/kernel/debug -v /lib/modules:/lib/modules:ro \
#     -v /usr/src:/usr/src:ro -v $PWD/profiles:/profiles \
#     -v telegen-cache:/var/cache/telegen telegen run -c /etc/telegen/config.yaml
# The cache volume keeps CFI unwind tables (built once per binary: libc ~0.7 s
# of CPU, libjvm ~8 s) and debuginfod downloads across restarts.
#
# BASE: any Debian 12. Where no registry is reachable, `make image`
# (scripts/container-image.sh) builds from localhost/debian:12, made with
# debootstrap by scripts/container-base.sh, with the podman flags such a
# machine needs. PIP_CERT: a CA bundle for pip behind a TLS-intercepting proxy.
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
ARG PIP_CERT
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/telegen
COPY scripts/setup-host.sh scripts/setup-host.sh
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates \
 && bash scripts/setup-host.sh --runtime \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
# The dependencies in a layer of their own: a code change rebuilds only what follows.
COPY pyproject.toml pyproject.toml
RUN python3 -m venv .venv \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
 && .venv/bin/pip install -q --no-cache-dir -r /tmp/requirements.txt grpcio-tools "setuptools>=77" wheel \
 && rm /tmp/requirements.txt \
 && find .venv -path '*/symbolic/*.so' -exec strip --strip-unneeded {} +
# (symbolic's wheel ships its Rust library with debug info: 78 MB, 5.5 MB stripped)
COPY . .
# Debian's bcc is pure Python over its libbcc.so: only that package joins the venv.
RUN .venv/bin/python -m grpc_tools.protoc -I telegen/formats --python_out=telegen/formats \
      --pyi_out=telegen/formats telegen/formats/profile.proto \
 && .venv/bin/pip install -q --no-cache-dir --no-deps --no-build-isolation -e . \
 && ln -sfn /usr/lib/python3/dist-packages/bcc \
      "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/bcc" \
 && .venv/bin/telegen validate -c config-examples/production.yaml >/dev/null
COPY config-examples/production.yaml /etc/telegen/config.yaml
# pprof files go to the directory the run command mounts.
ENV TELEGEN_PROFILE_DIR=/profiles
VOLUME /var/cache/telegen
# Kernel-header links and tracefs depend on the host kernel: made at start.
ENTRYPOINT ["/opt/telegen/scripts/docker-entrypoint.sh"]
CMD ["run", "-c", "/etc/telegen/config.yaml"]
