-- The peerings CreatePeering's probe (store::create_batch, list_for_batch_probe) reads whole
-- whatever they overlap, by VPC: those with explicit routes (a jsonb list no index reaches),
-- tombstones, failed peerings, and rows in a state this version does not know (so that a row
-- that does not decode still fails the creates that touch its VPCs). Few in practice; without
-- this index the probe of one spoke of a hub reads all of the hub's peerings.
CREATE INDEX peerings_probe_extra_local ON peerings (local_vpc)
    WHERE local_routes <> '[]'::jsonb OR remote_routes <> '[]'::jsonb
       OR state NOT IN ('pending', 'active', 'pending_acceptance', 'rejected', 'expired');
CREATE INDEX peerings_probe_extra_remote ON peerings (remote_vpc)
    WHERE local_routes <> '[]'::jsonb OR remote_routes <> '[]'::jsonb
       OR state NOT IN ('pending', 'active', 'pending_acceptance', 'rejected', 'expired');
