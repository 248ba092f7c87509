-- The claim (issue 12) takes a tenant's next queued run in the order
-- `priority DESC, created_at, id`. Without an index in that order every
-- claim sorted the whole backlog; with this one it reads each tenant's
-- first entry. Partial: only queued runs, so the index stays as small as
-- the queue, whatever the history holds.
CREATE INDEX runs_claim ON runs (tenant_id, priority DESC, created_at, id)
    WHERE state = 'queued';
