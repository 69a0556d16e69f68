//! Who may do what: the ordered roles and the action → minimum-role table of docs/api.md.
//! The engine refuses with it; the UI hides buttons with it.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Developer,
    Maintainer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Maintainer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn may(self, action: Action) -> bool {
        self >= action.minimum_role()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Projects, pipelines, jobs, logs, events.
    Read,
    CreatePipeline,
    /// Graceful cancel of a job or pipeline.
    Cancel,
    /// Immediate kill of a job or pipeline.
    Abort,
    /// A new attempt of a finished job or of a pipeline's failed and canceled jobs.
    Retry,
    /// Start a `manual` job.
    Play,
    ManageProjects,
    /// The keys of a project's CI variables (never their values).
    ListVariables,
    /// Users, tokens, runner tokens.
    Administer,
}

impl Action {
    pub fn minimum_role(self) -> Role {
        match self {
            Action::Read => Role::Viewer,
            Action::CreatePipeline | Action::Cancel | Action::Retry | Action::Play | Action::ListVariables => Role::Developer,
            Action::Abort | Action::ManageProjects => Role::Maintainer,
            Action::Administer => Role::Admin,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::CreatePipeline => "create pipelines",
            Action::Cancel => "cancel jobs",
            Action::Abort => "abort jobs",
            Action::Retry => "retry jobs",
            Action::Play => "play manual jobs",
            Action::ManageProjects => "manage projects",
            Action::ListVariables => "list CI variables",
            Action::Administer => "administer users and tokens",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_is_for_developers_and_abort_for_maintainers() {
        assert!(!Role::Viewer.may(Action::Cancel));
        assert!(Role::Developer.may(Action::Cancel));
        assert!(!Role::Developer.may(Action::Abort));
        assert!(Role::Maintainer.may(Action::Abort));
        assert!(!Role::Maintainer.may(Action::Administer));
        assert!(Role::Admin.may(Action::Administer));
        assert!(Role::Viewer.may(Action::Read));
        assert!(!Role::Viewer.may(Action::Play) && Role::Developer.may(Action::Play));
    }
}
