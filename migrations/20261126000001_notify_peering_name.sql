-- Name the changed peering in the notification, so that the worker can look
-- at just that peering (it still does full passes on its timer and whenever
-- it cannot tell what changed). Identical payloads in one transaction are
-- folded by Postgres.
CREATE OR REPLACE FUNCTION peerings_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('ovn_peerd_desired', OLD.name);
    ELSE
        PERFORM pg_notify('ovn_peerd_desired', NEW.name);
    END IF;
    RETURN NULL;
END $$;
