-- Traces (issue 21): a run's W3C trace context (`traceparent`), written
-- when it is queued with traces on, so the worker that claims it, in any
-- process, continues the trace its submission started. NULL with traces
-- off, and in runs queued before this migration.
ALTER TABLE runs ADD COLUMN trace_parent TEXT;
