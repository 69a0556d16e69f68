-- The words a canceller gave with a cancel or abort (at most 500 characters), of a job
-- and of a whole pipeline.
ALTER TABLE jobs ADD COLUMN cancel_message TEXT;
ALTER TABLE pipelines ADD COLUMN cancel_message TEXT;
