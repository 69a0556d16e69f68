-- Cleanup jobs: when a job runs once the jobs it waits for have finished (`when:` of its
-- configuration). Every value but on_success makes it a cleanup job, which a graceful
-- cancel of its pipeline leaves to run.
ALTER TABLE jobs ADD COLUMN when_to_run TEXT NOT NULL DEFAULT 'on_success';
