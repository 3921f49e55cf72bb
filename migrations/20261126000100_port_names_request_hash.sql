-- Peer-port names are unique across the deployment: the database refuses a
-- second holder even under concurrent creates on unrelated VPCs (VPCs "a-b" +
-- "c" and "a" + "b-c" both want a port named "a-b-c"). Rows are written in
-- the same transaction as the peering and go with it.
CREATE TABLE peering_ports (
    port_name    text PRIMARY KEY,
    peering_name text NOT NULL REFERENCES peerings (name) ON DELETE CASCADE
);
CREATE INDEX peering_ports_peering ON peering_ports (peering_name);

-- Existing peerings keep their ports; of two that already clash, the older
-- holds the name (the worker reports the other FAILED).
INSERT INTO peering_ports (port_name, peering_name)
SELECT p.port, peerings.name
FROM peerings,
     LATERAL (VALUES (local_vpc || '-' || remote_vpc), (remote_vpc || '-' || local_vpc)) AS p(port)
ORDER BY peerings.create_time, peerings.name
ON CONFLICT (port_name) DO NOTHING;

-- SHA-256 of the canonical request a request_id was first used with: a reuse
-- of the request_id with another request is refused. NULL on rows created
-- before this column existed (any retry of those is taken as the same request).
ALTER TABLE peerings ADD COLUMN request_hash bytea;
