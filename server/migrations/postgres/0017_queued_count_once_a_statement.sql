-- A tenant's queued count (migration 0012) kept once a statement rather
-- than once a run (issue 12, PostgreSQL). Migration 0012's row triggers
-- ran a PL/pgSQL call and an update of the tenant's row for every run
-- inserted and again for every run claimed: twice a run on the one row
-- every submission and claim of the tenant takes (BENCHMARKS.md). Now:
--
-- - an insert counts its statement's new runs, once a tenant, in one
--   statement trigger, which also wakes the workers (migration 0003's
--   trigger, folded in: one call where there were two);
-- - a claim counts its runs out in the update of the tenant's row it
--   already makes (`caisson_claims_held`, and `caisson_claim_held` for
--   workers of an older version), so moving from `queued` to `running` no
--   longer fires the row trigger. A run a claim undoes goes back to
--   `queued` through the row trigger, as every other move into or out of
--   `queued` still does (cancels, retries, expired leases, deletes).
--
-- The count is what `max_queued_runs` is checked against. Should it ever
-- be more than the queue (a server of an older version claiming a run it
-- has just submitted, which counts nothing out), the insert it would
-- refuse counts the queue again under the tenant's lock and refuses only
-- if the queue itself is past the quota: a count that drifted up can
-- delay nothing.
DROP TRIGGER runs_count_queued_insert ON runs;
DROP TRIGGER runs_notify_insert ON runs;

CREATE FUNCTION caisson_runs_inserted() RETURNS trigger AS $$
DECLARE
    added RECORD;
    queued BIGINT;
    quota BIGINT;
BEGIN
    -- Tenants in id order, so two inserts of runs of the same tenants
    -- lock their rows in the same order.
    FOR added IN SELECT tenant_id, COUNT(*) AS runs FROM inserted
        WHERE state = 'queued' GROUP BY tenant_id ORDER BY tenant_id
    LOOP
        UPDATE tenants SET queued_runs = queued_runs + added.runs WHERE id = added.tenant_id
            RETURNING queued_runs, max_queued_runs INTO queued, quota;
        IF queued > quota THEN
            SELECT COUNT(*) INTO queued FROM runs
                WHERE tenant_id = added.tenant_id AND state = 'queued';
            UPDATE tenants SET queued_runs = queued WHERE id = added.tenant_id;
            -- The server reads this message back as its quota error.
            IF queued > quota THEN
                RAISE EXCEPTION 'caisson_quota max_queued_runs %', quota;
            END IF;
        END IF;
    END LOOP;
    PERFORM pg_notify('caisson_runs', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER runs_inserted
    AFTER INSERT ON runs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT
    EXECUTE FUNCTION caisson_runs_inserted();

DROP TRIGGER runs_count_queued_update ON runs;
CREATE TRIGGER runs_count_queued_update
    AFTER UPDATE OF state ON runs
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
        AND (OLD.state = 'queued' OR NEW.state = 'queued')
        AND NOT (OLD.state = 'queued' AND NEW.state = 'running'))
    EXECUTE FUNCTION caisson_count_queued();

-- Migration 0016's check, with the claim's runs counted out of the queue
-- in its update of the tenant's row. The runs it undoes go back in
-- through the row trigger.
CREATE OR REPLACE FUNCTION caisson_claims_held(claimed TEXT[], tenant TEXT, worker TEXT, claimed_at BIGINT)
RETURNS TEXT[] AS $$
DECLARE
    quota BIGINT;
    running BIGINT;
    taken INT := COALESCE(cardinality(claimed), 0);
    excess INT;
    undone TEXT[] := '{}';
BEGIN
    UPDATE tenants SET last_claim_at = claimed_at, queued_runs = queued_runs - taken
        WHERE id = tenant
        RETURNING max_running_runs INTO quota;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no tenant %', tenant;
    END IF;
    SELECT COUNT(*) INTO running FROM runs WHERE tenant_id = tenant AND state = 'running';
    excess := LEAST(GREATEST(running - quota, 0), taken);
    IF excess > 0 THEN
        undone := claimed[taken - excess + 1 : taken];
        UPDATE runs SET state = 'queued', attempts = attempts - 1, worker_id = NULL,
            lease_until = NULL,
            started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END
            WHERE id = ANY (undone);
    END IF;
    INSERT INTO run_attempts (run_id, attempt, worker_id, started_at, state)
        SELECT id, attempts, worker, claimed_at, 'running' FROM runs
        WHERE id = ANY (claimed) AND NOT (id = ANY (undone))
        AND state = 'running' AND worker_id = worker
        ON CONFLICT (run_id, attempt) DO UPDATE SET worker_id = EXCLUDED.worker_id,
            started_at = EXCLUDED.started_at, finished_at = NULL, state = 'running',
            error = NULL;
    RETURN undone;
END;
$$ LANGUAGE plpgsql;

-- Migration 0014's one-run check, which workers of an older version may
-- still call: now the batch's check of a batch of one, so it counts its
-- run out the same way. It holds unless it was undone.
CREATE OR REPLACE FUNCTION caisson_claim_held(run TEXT, tenant TEXT, worker TEXT, claimed_at BIGINT)
RETURNS BOOLEAN AS $$
BEGIN
    RETURN cardinality(caisson_claims_held(ARRAY[run], tenant, worker, claimed_at)) = 0;
END;
$$ LANGUAGE plpgsql;
