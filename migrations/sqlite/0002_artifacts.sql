-- Artifact files uploaded by runners; the bytes live under the data dir
-- (artifacts/job-{job_id}/{path}), this table lists them.
CREATE TABLE job_artifacts (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
);
