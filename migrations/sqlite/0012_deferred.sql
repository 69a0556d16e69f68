-- The teardown commands a job registered with usher-defer (a JSON array of strings, in
-- order), recorded as the runner reports each one while the job runs.
ALTER TABLE jobs ADD COLUMN deferred TEXT;
