-- Retention: artifacts expire (artifacts.expire_in) or make room under a storage cap;
-- an expired file is deleted but its row stays, so listings can say so.
ALTER TABLE job_artifacts ADD COLUMN expires_at TEXT;
ALTER TABLE job_artifacts ADD COLUMN expired INTEGER NOT NULL DEFAULT 0;
CREATE INDEX job_artifacts_expiry ON job_artifacts(expired, expires_at);
