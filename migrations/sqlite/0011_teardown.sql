-- The receipt of a job's teardown (JSON): what ending it stopped and removed, and what
-- the final sweep still found. Reported by the runner with the job's end.
ALTER TABLE jobs ADD COLUMN teardown TEXT;
