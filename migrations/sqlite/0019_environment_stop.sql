-- `environment: on_stop`: the name of the job that stops the environment this job makes.
-- After a graceful cancel that stop job runs as a cleanup job once this one has started.
ALTER TABLE jobs ADD COLUMN on_stop TEXT;
