-- Each tenant's queued and running runs, kept by triggers (issue 12).
-- A submission checks `max_queued_runs` and a claim `max_running_runs`
-- against these counts: read from the tenant's row, which both already
-- write to take its lock, instead of a COUNT(*) over the tenant's runs in
-- a statement of its own (a scan as long as the queue). The row lock
-- makes them exact under concurrent transactions: an UPDATE that waited
-- for it reads the row as the last holder committed it. Triggers, so that
-- every path that moves a run (submit, claim, finish, retry, release,
-- cancel, an expired lease, a workflow's cancel) keeps them exact, in the
-- same transaction, without each having to remember; counted from the
-- runs here, so a database from before starts exact too.
ALTER TABLE tenants ADD COLUMN queued_runs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN running_runs BIGINT NOT NULL DEFAULT 0;

UPDATE tenants t SET
    queued_runs = (SELECT COUNT(*) FROM runs r WHERE r.tenant_id = t.id AND r.state = 'queued'),
    running_runs = (SELECT COUNT(*) FROM runs r WHERE r.tenant_id = t.id AND r.state = 'running');

CREATE FUNCTION caisson_count_runs() RETURNS trigger AS $$
DECLARE
    queued BIGINT := 0;
    running BIGINT := 0;
    tenant TEXT;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        tenant := OLD.tenant_id;
        queued := queued - (OLD.state = 'queued')::int;
        running := running - (OLD.state = 'running')::int;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        tenant := NEW.tenant_id;
        queued := queued + (NEW.state = 'queued')::int;
        running := running + (NEW.state = 'running')::int;
    END IF;
    IF queued <> 0 OR running <> 0 THEN
        UPDATE tenants SET queued_runs = queued_runs + queued, running_runs = running_runs + running
            WHERE id = tenant;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER runs_count_insert
    AFTER INSERT ON runs
    FOR EACH ROW
    WHEN (NEW.state IN ('queued', 'running'))
    EXECUTE FUNCTION caisson_count_runs();

CREATE TRIGGER runs_count_update
    AFTER UPDATE OF state ON runs
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION caisson_count_runs();

CREATE TRIGGER runs_count_delete
    AFTER DELETE ON runs
    FOR EACH ROW
    WHEN (OLD.state IN ('queued', 'running'))
    EXECUTE FUNCTION caisson_count_runs();
