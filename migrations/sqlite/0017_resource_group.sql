-- `resource_group`: at most one job of a project with the same group runs or cancels at
-- a time; a claim skips the others until it has ended.
ALTER TABLE jobs ADD COLUMN resource_group TEXT;
CREATE INDEX jobs_resource_group ON jobs (project_id, resource_group, status);
