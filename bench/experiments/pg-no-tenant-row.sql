-- For measurement only (issue 12): what PostgreSQL's throughput would be
-- with no run touching its tenant's row, the quotas' counts and the round
-- robin's stamp left out. It breaks `max_queued_runs`, `max_running_runs`
-- (checked without the tenant's lock) and the fairness between tenants,
-- so it belongs in no migration. Run with
--   CAISSON_BENCH_PG_SQL=bench/experiments/pg-no-tenant-row.sql \
--   CAISSON_BENCH_ONLY=pg-throughput cargo bench -p caisson-bench
-- and compare against a run without it (BENCHMARKS.md, "the tenant's row,
-- measured").

-- The queued count's triggers (migration 0012), gone.
DROP TRIGGER runs_count_queued_insert ON runs;
DROP TRIGGER runs_count_queued_update ON runs;
DROP TRIGGER runs_count_queued_delete ON runs;

-- Migration 0014's claim check, reading the tenant's quota instead of
-- locking its row to stamp `last_claim_at`.
CREATE OR REPLACE FUNCTION caisson_claim_held(run TEXT, tenant TEXT, worker TEXT, claimed_at BIGINT)
RETURNS BOOLEAN AS $$
DECLARE
    quota BIGINT;
    running BIGINT;
BEGIN
    SELECT max_running_runs INTO quota FROM tenants WHERE id = tenant;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no tenant %', tenant;
    END IF;
    SELECT COUNT(*) INTO running FROM runs WHERE tenant_id = tenant AND state = 'running';
    IF running > quota THEN
        UPDATE runs SET state = 'queued', attempts = attempts - 1, worker_id = NULL,
            lease_until = NULL,
            started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END
            WHERE id = run;
        RETURN FALSE;
    END IF;
    INSERT INTO run_attempts (run_id, attempt, worker_id, started_at, state)
        SELECT id, attempts, worker, claimed_at, 'running' FROM runs
        WHERE id = run AND state = 'running' AND worker_id = worker
        ON CONFLICT (run_id, attempt) DO UPDATE SET worker_id = EXCLUDED.worker_id,
            started_at = EXCLUDED.started_at, finished_at = NULL, state = 'running',
            error = NULL;
    RETURN TRUE;
END;
$$ LANGUAGE plpgsql;
