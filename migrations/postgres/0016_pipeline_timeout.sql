-- When a pipeline with `workflow: timeout` has run too long (RFC 3339, from its
-- creation): the reaper then cancels it gracefully.
ALTER TABLE pipelines ADD COLUMN timeout_at TEXT;
