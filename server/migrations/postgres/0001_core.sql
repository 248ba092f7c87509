-- Caisson's coordination schema. The SQLite migration beside this one holds
-- the same tables and columns; only column types differ. Times are
-- milliseconds since the Unix epoch (UTC); ids are UUID text.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    -- What this tenant's runs may be granted: JSON {objects: [...], sql: [...]}.
    allowed_grants TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL
);

-- Bearer tokens, stored as SHA-256 hex: a database leak does not leak tokens.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    token_hash  TEXT NOT NULL UNIQUE,
    admin       BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- Task components. The bytes live in the module store under their digest.
CREATE TABLE modules (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    digest      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    module_name      TEXT NOT NULL,
    module_version   TEXT NOT NULL,
    digest           TEXT NOT NULL,
    input            BYTEA NOT NULL,
    params           TEXT NOT NULL,            -- JSON object of strings
    grants           TEXT NOT NULL,            -- JSON {objects: [...], sql: [...]}
    timeout_ms       BIGINT NOT NULL,
    memory_bytes     BIGINT NOT NULL,
    fuel             BIGINT,
    max_retries      BIGINT NOT NULL,
    backoff_ms       BIGINT NOT NULL,
    retry_timeouts   BIGINT NOT NULL,          -- 0/1
    priority         BIGINT NOT NULL,
    idempotency_key  TEXT,
    -- queued | running | succeeded | failed | cancelled | timed_out
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    not_before       BIGINT NOT NULL,          -- earliest time to (re)start
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    worker_id        TEXT,
    lease_until      BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    output           BYTEA,
    error            TEXT,
    retryable        BIGINT,                   -- of the last error, 0/1
    schedule_id      TEXT,
    workflow_run_id  TEXT,
    step_name        TEXT,
    logical_date     BIGINT,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX runs_queue ON runs (state, not_before, priority);
CREATE INDEX runs_by_tenant ON runs (tenant_id, created_at);
CREATE INDEX runs_by_lease ON runs (state, lease_until);

-- One row per attempt, so retries keep every error.
CREATE TABLE run_attempts (
    run_id       TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt      BIGINT NOT NULL,
    worker_id    TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    state        TEXT NOT NULL,   -- running | succeeded | failed | timed_out | cancelled | lost
    error        TEXT,
    PRIMARY KEY (run_id, attempt)
);

-- The run's log, kept in the database so it outlives the worker.
CREATE TABLE run_logs (
    run_id   TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq      BIGINT NOT NULL,
    attempt  BIGINT NOT NULL,
    time     BIGINT NOT NULL,
    level    TEXT NOT NULL,
    source   TEXT NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE schedules (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    name            TEXT NOT NULL,
    cron            TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    template        TEXT NOT NULL,   -- JSON run template
    catch_up        TEXT NOT NULL,   -- skip | all
    paused          BIGINT NOT NULL DEFAULT 0,
    next_fire_at    BIGINT,          -- null when paused
    last_fired_at   BIGINT,
    created_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX schedules_due ON schedules (paused, next_fire_at);

CREATE TABLE workflows (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,       -- JSON: steps with run templates and depends_on
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE workflow_runs (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    workflow_name  TEXT NOT NULL,
    definition     TEXT NOT NULL,    -- the definition as it was when started
    state          TEXT NOT NULL,    -- running | succeeded | failed | cancelled
    created_at     BIGINT NOT NULL,
    finished_at    BIGINT
);

CREATE TABLE workflow_steps (
    workflow_run_id  TEXT NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    step_name        TEXT NOT NULL,
    state            TEXT NOT NULL,  -- pending | running | succeeded | failed | skipped
    run_id           TEXT,
    PRIMARY KEY (workflow_run_id, step_name)
);
