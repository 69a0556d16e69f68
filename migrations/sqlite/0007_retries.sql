-- Retries: a new attempt is a new job row pointing at the one it retries; the old one is
-- marked retried and no longer counts for the pipeline's status or its scheduling.
ALTER TABLE jobs ADD COLUMN retry_of INTEGER;
ALTER TABLE jobs ADD COLUMN retried INTEGER NOT NULL DEFAULT 0;
