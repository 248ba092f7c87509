-- Each tenant's queued and running runs, kept by triggers (issue 12).
-- A submission checks `max_queued_runs` and a claim `max_running_runs`
-- against these counts: read from the tenant's row, which both already
-- write to take its lock, instead of a COUNT(*) over the tenant's runs in
-- a statement of its own (a scan as long as the queue). Triggers, so that
-- every path that moves a run (submit, claim, finish, retry, release,
-- cancel, an expired lease, a workflow's cancel) keeps them exact, in the
-- same transaction, without each having to remember; counted from the
-- runs here, so a database from before starts exact too.
ALTER TABLE tenants ADD COLUMN queued_runs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN running_runs BIGINT NOT NULL DEFAULT 0;

UPDATE tenants SET
    queued_runs = (SELECT COUNT(*) FROM runs r WHERE r.tenant_id = tenants.id AND r.state = 'queued'),
    running_runs = (SELECT COUNT(*) FROM runs r WHERE r.tenant_id = tenants.id AND r.state = 'running');

CREATE TRIGGER runs_count_insert AFTER INSERT ON runs
    WHEN NEW.state IN ('queued', 'running')
BEGIN
    UPDATE tenants SET
        queued_runs = queued_runs + (NEW.state = 'queued'),
        running_runs = running_runs + (NEW.state = 'running')
    WHERE id = NEW.tenant_id;
END;

CREATE TRIGGER runs_count_update AFTER UPDATE OF state ON runs
    WHEN OLD.state IS NOT NEW.state
        AND (OLD.state IN ('queued', 'running') OR NEW.state IN ('queued', 'running'))
BEGIN
    UPDATE tenants SET
        queued_runs = queued_runs + (NEW.state = 'queued') - (OLD.state = 'queued'),
        running_runs = running_runs + (NEW.state = 'running') - (OLD.state = 'running')
    WHERE id = NEW.tenant_id;
END;

CREATE TRIGGER runs_count_delete AFTER DELETE ON runs
    WHEN OLD.state IN ('queued', 'running')
BEGIN
    UPDATE tenants SET
        queued_runs = queued_runs - (OLD.state = 'queued'),
        running_runs = running_runs - (OLD.state = 'running')
    WHERE id = OLD.tenant_id;
END;
