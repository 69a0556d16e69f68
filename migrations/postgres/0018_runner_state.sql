-- A runner an admin paused takes no new job; one draining (SIGQUIT) says so; and the
-- executor it runs jobs with, as it said when it connected.
ALTER TABLE runners ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runners ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runners ADD COLUMN executor TEXT;
