//! The engine's integration tests, in one binary (one link instead of five, and every
//! helper of `common` used by some test), each module on both databases: SQLite, and
//! PostgreSQL under scripts/with-postgres.

mod cleanup_jobs;
mod common;
mod connections;
mod gate;
mod gitlab_rules;
mod log_pages;
