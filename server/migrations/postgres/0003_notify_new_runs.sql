-- Wake idle workers on other machines when runs are submitted, instead of
-- leaving them to their next poll. Once per statement, so a claim storm
-- cannot follow a bulk insert; re-queued retries (UPDATEs) are found by
-- the poll, after their backoff anyway.
CREATE FUNCTION caisson_notify_runs() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('caisson_runs', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER runs_notify_insert
    AFTER INSERT ON runs
    FOR EACH STATEMENT
    EXECUTE FUNCTION caisson_notify_runs();
