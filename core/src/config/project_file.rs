//! The address of a file of another Usher project's repository (`include: project`, a
//! component): how the parser names it to the caller that fetches it, and back.

use serde::{Deserialize, Serialize};

/// A file of another Usher project's repository (`include: project`), at a branch, tag
/// or commit (`ref`; none: the project's default branch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectFile {
    pub project: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub file: String,
}

/// How a [`ProjectFile`]'s address begins (no repository path does: [`super::include::local_paths`]
/// refuses one that would).
pub(super) const PROJECT_ADDRESS: &str = "project:";

impl ProjectFile {
    /// The address [`super::include::local_paths`] gives it, which [`ProjectFile::from_address`] reads.
    pub fn address(&self) -> String {
        format!("{PROJECT_ADDRESS}{}", serde_json::to_string(self).expect("strings serialize"))
    }

    pub fn from_address(address: &str) -> Option<ProjectFile> {
        serde_json::from_str(address.strip_prefix(PROJECT_ADDRESS)?).ok()
    }

    /// Another file of the same project at the same ref (its `include: local`).
    pub(super) fn sibling(&self, path: &str) -> ProjectFile {
        ProjectFile {
            file: normal(path),
            ..self.clone()
        }
    }

    /// For messages: `ci/a.yml` of project `templates` (at `v2`).
    pub fn describe(&self) -> String {
        match &self.git_ref {
            Some(r) => format!("`{}` of project `{}` at `{r}`", self.file, self.project),
            None => format!("`{}` of project `{}`", self.file, self.project),
        }
    }
}

/// A repository path as `include: local` writes it (`/ci/build.yml` or `ci/build.yml`).
pub fn normal(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}
