//! The routes of API.md "Pages".

pub mod job;
pub mod login;
pub mod pipeline;
pub mod pipelines;
