-- Fewer B-tree entries written per run (issue 12). On the embedded
-- default a commit's cost is the pages it writes to the log, and every
-- B-tree a run's statements touch adds its pages (BENCHMARKS.md, "fewer
-- B-trees per run").
--
-- `runs_by_tenant_state` counted a tenant's queued and running runs for
-- its quotas and fair claims. Migration 0010 keeps those counts on the
-- tenant's row, so nothing reads the index on SQLite any more (a listing
-- by state orders by `created_at` and is served by `runs_by_tenant`),
-- yet each of a run's three moves rewrote its entry. PostgreSQL keeps its
-- own: it counts running runs over it.
DROP INDEX runs_by_tenant_state;

-- An attempt's row and a log line are only ever looked up by their key
-- (`run_id` first), so they are stored in their key's B-tree (WITHOUT
-- ROWID) rather than in a rowid table with the key in an index of its
-- own: one B-tree written per row instead of two. Their rows are small,
-- which is where SQLite recommends it. Copied whole, then swapped in.
CREATE TABLE run_attempts_keyed (
    run_id       TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt      BIGINT NOT NULL,
    worker_id    TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    state        TEXT NOT NULL,   -- running | succeeded | failed | timed_out | cancelled | lost
    error        TEXT,
    PRIMARY KEY (run_id, attempt)
) WITHOUT ROWID;
INSERT INTO run_attempts_keyed (run_id, attempt, worker_id, started_at, finished_at, state, error)
    SELECT run_id, attempt, worker_id, started_at, finished_at, state, error FROM run_attempts;
DROP TABLE run_attempts;
ALTER TABLE run_attempts_keyed RENAME TO run_attempts;

CREATE TABLE run_logs_keyed (
    run_id   TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq      BIGINT NOT NULL,
    attempt  BIGINT NOT NULL,
    time     BIGINT NOT NULL,
    level    TEXT NOT NULL,
    source   TEXT NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
INSERT INTO run_logs_keyed (run_id, seq, attempt, time, level, source, message)
    SELECT run_id, seq, attempt, time, level, source, message FROM run_logs;
DROP TABLE run_logs;
ALTER TABLE run_logs_keyed RENAME TO run_logs;
