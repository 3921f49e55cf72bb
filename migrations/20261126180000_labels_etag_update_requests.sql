-- Labels (AIP-128: platform tags such as tenant or owner reference), the etag
-- (AIP-154) and UpdatePeering's request_ids.
--
-- `labels` is a JSON object of string keys to string values, checked by the API.
--
-- `etag` is replaced by a fresh random value on every UPDATE of the row, whoever
-- writes it (the API's updates and deletions, the worker's status writes), so it
-- changes whenever the peering does; a peering deleted and created again under
-- the same name never gets an etag back. Every UPDATE of ovn-peerd changes
-- something (status writes skip unchanged rows), so "every UPDATE" is "every change".
-- UpdatePeering and DeletePeering compare it in the statement (or the locked
-- transaction) that writes: a stale etag changes nothing.
ALTER TABLE peerings
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    ADD COLUMN etag   uuid  NOT NULL DEFAULT gen_random_uuid();

CREATE FUNCTION peerings_etag() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.etag := gen_random_uuid();
    RETURN NEW;
END $$;

CREATE TRIGGER peerings_etag BEFORE UPDATE ON peerings
    FOR EACH ROW EXECUTE FUNCTION peerings_etag();

-- UpdatePeering's request_ids: a retry with the same request_id and the same
-- request (by fingerprint) gets the peering instead of a second change (and
-- instead of ABORTED for the etag its first attempt made stale); another
-- request with it is refused. They go with their peering.
CREATE TABLE peering_update_requests (
    request_id   text        PRIMARY KEY,
    peering_name text        NOT NULL REFERENCES peerings (name) ON DELETE CASCADE,
    request_hash bytea       NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX peering_update_requests_peering ON peering_update_requests (peering_name);
