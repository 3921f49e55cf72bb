# OVN central (NB + SB ovsdb-server, ovn-northd) from Debian's packages, for trying
# ovn-peerd with docker compose. Not an HA deployment: standalone databases, one container.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ovn-central \
    && rm -rf /var/lib/apt/lists/*

COPY docker/ovn-central-entrypoint.sh /usr/local/bin/ovn-central-entrypoint

ENV OVN_DB_DIR=/var/lib/ovn
VOLUME /var/lib/ovn
EXPOSE 6641 6642
HEALTHCHECK --interval=5s --timeout=5s --start-period=5s --retries=10 \
    CMD ovn-nbctl --db=tcp:127.0.0.1:6641 --timeout=3 show >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/ovn-central-entrypoint"]
