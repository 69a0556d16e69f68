-- Usher's initial schema (PostgreSQL). Times are RFC 3339 UTC text with milliseconds, so
-- they sort as text; booleans are 0/1 integers; the same columns exist in sqlite/.
CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE runner_tokens (
    id BIGSERIAL PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE runners (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    token_id BIGINT NOT NULL REFERENCES runner_tokens(id),
    connected_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
CREATE TABLE projects (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ci_config TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE pipelines (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id),
    git_ref TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    triggered_by TEXT NOT NULL,
    cancel_mode TEXT,
    cancel_by TEXT,
    cancel_at TEXT,
    cancel_reason TEXT
);
CREATE INDEX pipelines_project ON pipelines(project_id, id);
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines(id),
    project_id BIGINT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    stage TEXT NOT NULL,
    stage_index BIGINT NOT NULL,
    needs TEXT,
    status TEXT NOT NULL,
    interruptible BIGINT NOT NULL,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    runner_id BIGINT,
    exit_code BIGINT,
    failure_reason TEXT,
    cancel_mode TEXT,
    cancel_by TEXT,
    cancel_at TEXT,
    cancel_reason TEXT,
    cancel_deadline TEXT,
    after_exit_code BIGINT,
    after_duration_ms BIGINT,
    after_timed_out BIGINT,
    log_length BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_pipeline ON jobs(pipeline_id);
CREATE INDEX jobs_status ON jobs(status, id);
CREATE TABLE job_events (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs(id),
    at TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    actor TEXT NOT NULL,
    mode TEXT,
    reason TEXT,
    detail TEXT
);
CREATE INDEX job_events_job ON job_events(job_id, id);
CREATE TABLE job_log_chunks (
    job_id BIGINT NOT NULL REFERENCES jobs(id),
    byte_offset BIGINT NOT NULL,
    -- byte_offset + the byte length of data (SQL's LENGTH counts characters)
    byte_end BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, byte_offset)
);
