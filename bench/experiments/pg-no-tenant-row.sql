-- For measurement only (issue 12): what PostgreSQL's throughput would be
-- with no run touching its tenant's row, the quotas' counts and the round
-- robin's stamp left out. It breaks `max_queued_runs`, `max_running_runs`
-- (checked without the tenant's lock) and the fairness between tenants,
-- so it belongs in no migration. Run with
--   CAISSON_BENCH_PG_SQL=bench/experiments/pg-no-tenant-row.sql \
--   CAISSON_BENCH_ONLY=pg-throughput cargo bench -p caisson-bench
-- and compare against a run without it (BENCHMARKS.md, "the tenant's row,
-- measured").

-- The queued count's triggers (migrations 0012 and 0017), gone; the
-- insert's statement trigger left to wake the workers only.
CREATE OR REPLACE FUNCTION caisson_runs_inserted() RETURNS trigger AS $f$
BEGIN
    PERFORM pg_notify('caisson_runs', '');
    RETURN NULL;
END;
$f$ LANGUAGE plpgsql;
DROP TRIGGER runs_count_queued_update ON runs;
DROP TRIGGER runs_count_queued_delete ON runs;

-- Migration 0016's claim check (the one claims call), reading the
-- tenant's quota instead of locking its row to stamp `last_claim_at`: the
-- function as the database holds it, with that one statement replaced.
DO $$
DECLARE
    def TEXT := pg_get_functiondef('caisson_claims_held'::regproc);
    changed TEXT;
BEGIN
    changed := regexp_replace(def,
        'UPDATE tenants SET last_claim_at = claimed_at, queued_runs = queued_runs - taken\s+WHERE id = tenant\s+RETURNING max_running_runs INTO quota;',
        'SELECT max_running_runs INTO quota FROM tenants WHERE id = tenant;');
    IF changed = def THEN
        RAISE EXCEPTION 'caisson_claims_held no longer stamps last_claim_at as this experiment expects';
    END IF;
    EXECUTE changed;
END $$;
