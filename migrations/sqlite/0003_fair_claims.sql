-- Fair claims look up when each project last had a job started.
CREATE INDEX jobs_project_started ON jobs(project_id, started_at);
