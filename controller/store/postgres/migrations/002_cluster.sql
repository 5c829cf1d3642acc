-- Several controllers (controller/cluster/cluster.ts): host leases are looked up by owner
-- (a controller reads the leases it holds at start and when the database comes back).
CREATE INDEX hk_hostlease_owner ON hk_row ((data ->> 'owner')) WHERE kind = 'hostLease';
