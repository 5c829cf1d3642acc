-- Every row of every kind, as the embedded store keeps them: JSON keyed by (kind, uuid).
-- One table rather than one per kind: resources share one uuid space (a partial UNIQUE
-- index below says so, which per-kind tables could not), a new kind needs no migration, and
-- each kind's indexes are partial indexes restricted to it (the store always writes the kind
-- as a literal, so the planner matches them).
--
-- `ord` is the insertion order the query language returns when unsorted; an update keeps it.
-- The indexes must match controller/store/schema.ts (KINDS[kind].indexes), named
-- hk_<kind>_<field> in lower case, a list field's dot as `_`: test/store/postgres.test.ts
-- checks both ways.
CREATE TABLE hk_row (
  kind text NOT NULL,
  uuid text NOT NULL,
  ord bigint GENERATED ALWAYS AS IDENTITY,
  data jsonb NOT NULL,
  PRIMARY KEY (kind, uuid)
);

-- Unsorted scans of one kind, in insertion order (also `all()` and paging by `start`).
CREATE INDEX hk_row_kind_ord ON hk_row (kind, ord);

-- One uuid space for resources (ZStack's ResourceVO): schema.ts KINDS[..].resource.
CREATE UNIQUE INDEX hk_resource_uuid ON hk_row (uuid) WHERE kind IN ('zone', 'cluster', 'host', 'vm', 'tag');

CREATE INDEX hk_cluster_zoneuuid ON hk_row ((data ->> 'zoneUuid')) WHERE kind = 'cluster';

CREATE UNIQUE INDEX hk_host_managementip ON hk_row ((data ->> 'managementIp')) WHERE kind = 'host';
CREATE INDEX hk_host_clusteruuid ON hk_row ((data ->> 'clusterUuid')) WHERE kind = 'host';
CREATE INDEX hk_host_zoneuuid ON hk_row ((data ->> 'zoneUuid')) WHERE kind = 'host';
CREATE INDEX hk_host_state ON hk_row ((data ->> 'state')) WHERE kind = 'host';
CREATE INDEX hk_host_status ON hk_row ((data ->> 'status')) WHERE kind = 'host';

CREATE INDEX hk_vm_hostuuid ON hk_row ((data ->> 'hostUuid')) WHERE kind = 'vm';
-- "Some NIC has this ip": data->'vmNics' @> '[{"ip": "..."}]'. fastupdate off: with it on,
-- new entries wait in a pending list that every search reads linearly until a vacuum folds
-- it in (measured: 82 ms for one lookup after copying 100,000 VMs with autovacuum off);
-- NICs change rarely, so each write updating the index directly costs little.
CREATE INDEX hk_vm_vmnics_ip ON hk_row USING gin ((data -> 'vmNics') jsonb_path_ops) WITH (fastupdate = off) WHERE kind = 'vm';

CREATE INDEX hk_tag_resourceuuid ON hk_row ((data ->> 'resourceUuid')) WHERE kind = 'tag';

-- The planner keeps no statistics for the expressions of partial indexes, so it guessed
-- `kind = 'host' AND state = 'Enabled' AND status = 'Connected'` at 1 row of 5,300 and sorted
-- them all instead of walking hk_row_kind_ord until the page was full. Extended statistics
-- (PostgreSQL 14 or later) on the kind and the low-cardinality fields give it the real
-- frequencies of each combination (filled by ANALYZE: autovacuum, or store:copy at its end).
CREATE STATISTICS hk_row_kind_state_status (mcv) ON kind, (data ->> 'state'), (data ->> 'status') FROM hk_row;
