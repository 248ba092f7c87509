-- The queue's and the leases' indexes hold only the runs they serve
-- (issue 12): `runs_queue` the queued runs, `runs_by_lease` the running
-- ones. Each held every run, so every run's three moves (queued, running,
-- ended) rewrote an entry in both, and an ended run stayed in both for
-- good. Partial, a run enters each once and leaves it once, and a finish
-- touches only the lease's: fewer pages written per commit (the embedded
-- default's largest cost, BENCHMARKS.md), and indexes as small as the
-- queue and the running set, whatever the history holds. Their readers
-- all name the state the index holds (`state = 'queued'`, `state =
-- 'running'`), which is what lets SQLite use a partial index.
DROP INDEX runs_queue;
CREATE INDEX runs_queue ON runs (not_before, priority) WHERE state = 'queued';

DROP INDEX runs_by_lease;
CREATE INDEX runs_by_lease ON runs (lease_until) WHERE state = 'running';
