-- `allow_failure: true` from the CI file: the job's failure does not fail its pipeline
-- nor stop later stages (1), or it does (0).
ALTER TABLE jobs ADD COLUMN allow_failure INTEGER NOT NULL DEFAULT 0;
