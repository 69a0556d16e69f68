-- Projects built from git repositories. The URL is kept without credentials; HTTPS
-- credentials, an SSH key and the webhook secret are kept apart and never served.
-- An empty ci_config means "the repository's CI file".
ALTER TABLE projects ADD COLUMN repository_url TEXT;
ALTER TABLE projects ADD COLUMN repository_username TEXT;
ALTER TABLE projects ADD COLUMN repository_password TEXT;
ALTER TABLE projects ADD COLUMN ssh_private_key TEXT;
ALTER TABLE projects ADD COLUMN default_branch TEXT NOT NULL DEFAULT 'main';
ALTER TABLE projects ADD COLUMN webhook_secret TEXT;
-- The commit a pipeline runs, and its title.
ALTER TABLE pipelines ADD COLUMN sha TEXT;
ALTER TABLE pipelines ADD COLUMN commit_title TEXT;
