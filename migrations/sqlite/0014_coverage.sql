-- The job's coverage (percent), from the last line of its log its `coverage:` regular
-- expression matches.
ALTER TABLE jobs ADD COLUMN coverage DOUBLE PRECISION;
