-- Project CI variables: every job of the project gets them. The value is write-only (no
-- answer shows it); a masked one is replaced by [MASKED] in job logs.
CREATE TABLE project_variables (
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    masked INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    PRIMARY KEY (project_id, key)
);
