//! How long each job's graceful cancel may take — its `cancel_grace` plus its
//! after_script timeout — remembered from the definitions the engine has already read.
//! A job's definition never changes once stored, so cancelling a job this replica
//! handed to a runner needs no read of it: one statement fewer on the cancel path.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::StoredSpec;

/// At most this many jobs are remembered; past it the memory starts again (a cancel of a
/// forgotten job reads its definition, as it would without this).
const KEPT: usize = 20_000;

#[derive(Default)]
pub(crate) struct CancelWindows {
    secs: Mutex<HashMap<i64, u64>>,
}

impl CancelWindows {
    /// The seconds a graceful cancel of a job defined by `spec` may take before the
    /// runner's report is overdue (the engine adds its margin).
    pub(crate) fn of(spec: &StoredSpec) -> u64 {
        spec.job.cancel_grace_secs + spec.job.after_script_timeout_secs
    }

    pub(crate) fn remember(&self, job_id: i64, spec: &StoredSpec) {
        let mut secs = self.secs.lock().expect("not poisoned");
        if secs.len() >= KEPT {
            secs.clear();
        }
        secs.insert(job_id, Self::of(spec));
    }

    pub(crate) fn get(&self, job_id: i64) -> Option<u64> {
        self.secs.lock().expect("not poisoned").get(&job_id).copied()
    }
}
