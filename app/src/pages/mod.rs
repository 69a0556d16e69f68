//! The routes of docs/api.md "Pages".

pub mod admin;
pub mod job;
pub mod login;
pub mod pipeline;
pub mod pipelines;
pub mod projects;
pub mod users;
