-- `when: delayed`: the job's `start_in` (seconds), and, while it waits in `manual`, when
-- the reaper plays it (RFC 3339, as every time column).
ALTER TABLE jobs ADD COLUMN start_in INTEGER;
ALTER TABLE jobs ADD COLUMN play_at TEXT;
-- The reaper's question (manual jobs whose time has come): only waiting ones are read.
CREATE INDEX jobs_play_at ON jobs (status, play_at) WHERE play_at IS NOT NULL;
