-- The server's copies of caches (`cache:`), shared by every runner: one archive per
-- project and key, named by the key's SHA-256 and kept in artifact storage, with its size
-- and when it was last saved. A project keeps only its most recently saved ones.
CREATE TABLE caches (
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    saved_at TEXT NOT NULL,
    PRIMARY KEY (project_id, name)
);
