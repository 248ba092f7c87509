-- A tenant's queued runs counted, and its `max_queued_runs` held, by the
-- insert itself (issue 12, PostgreSQL; SQLite counts them as migration 0010
-- does). A submission used to lock the tenant's row first and count its
-- queue, so it held that lock over three round trips (the count, the
-- insert, the commit), and 8 clients' submissions waited in line for it
-- (BENCHMARKS.md). Here the insert's trigger takes the lock at the last
-- moment, adds the run to the count and refuses it past the quota, so the
-- lock is held from the insert to the commit. Only moves into or out of
-- `queued` touch the row: a run that succeeds or fails never waits for it
-- (migration 0011 took out the triggers that did). Only a new run is held
-- to the quota: a retry or an expired lease queues a run that was admitted.
ALTER TABLE tenants ADD COLUMN queued_runs BIGINT NOT NULL DEFAULT 0;

UPDATE tenants t SET
    queued_runs = (SELECT COUNT(*) FROM runs r WHERE r.tenant_id = t.id AND r.state = 'queued');

CREATE FUNCTION caisson_count_queued() RETURNS trigger AS $$
DECLARE
    delta BIGINT := 0;
    tenant TEXT;
    queued BIGINT;
    quota BIGINT;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state = 'queued' THEN
        delta := delta - 1;
        tenant := OLD.tenant_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state = 'queued' THEN
        delta := delta + 1;
        tenant := NEW.tenant_id;
    END IF;
    IF delta = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE tenants SET queued_runs = queued_runs + delta WHERE id = tenant
        RETURNING queued_runs, max_queued_runs INTO queued, quota;
    -- The server reads this message back as its quota error.
    IF TG_OP = 'INSERT' AND queued > quota THEN
        RAISE EXCEPTION 'caisson_quota max_queued_runs %', quota;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER runs_count_queued_insert
    AFTER INSERT ON runs
    FOR EACH ROW
    WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION caisson_count_queued();

CREATE TRIGGER runs_count_queued_update
    AFTER UPDATE OF state ON runs
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state AND (OLD.state = 'queued' OR NEW.state = 'queued'))
    EXECUTE FUNCTION caisson_count_queued();

CREATE TRIGGER runs_count_queued_delete
    AFTER DELETE ON runs
    FOR EACH ROW
    WHEN (OLD.state = 'queued')
    EXECUTE FUNCTION caisson_count_queued();
