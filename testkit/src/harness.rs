//! A test binary whose tests need a service the machine may not have (a Docker engine,
//! a PostgreSQL server) sets `harness = false` and runs its tests through [`run`]
//! (libtest-mimic, which takes the same arguments and prints the same summary as
//! Rust's own harness). A test whose service is missing is reported *ignored*, with
//! one line saying what was skipped and why, instead of passing without having run;
//! when USHER_REQUIRE_DOCKER=1 or USHER_REQUIRE_POSTGRES says the service must be
//! there, the test runs and fails.
//!
//! Each test is an `async fn()` run on its own multi-threaded tokio runtime, as
//! `#[tokio::test(flavor = "multi_thread")]` would; [`tests!`](crate::tests) registers
//! them by name:
//!
//! ```text
//! fn main() -> std::process::ExitCode {
//!     usher_testkit::harness::run(usher_testkit::tests![
//!         Needs::Nothing, 2 => [a_test_anywhere];
//!         Needs::Docker, 2 => [first_docker_test, second_docker_test];
//!     ])
//! }
//! ```

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;

pub use libtest_mimic::Trial;

/// What a test needs besides the machine itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// The test Docker engine of scripts/with-docker (`USHER_TEST_DOCKER_HOST`).
    Docker,
    /// A PostgreSQL server (`TEST_DATABASE_URL`, set by scripts/with-postgres).
    Postgres,
    /// An S3-compatible server (`USHER_TEST_S3_ENDPOINT`, set by scripts/with-s3) and a
    /// PostgreSQL server (replicas sharing both).
    ObjectStorage,
}

impl Needs {
    /// Why a test with these needs is skipped here, or None when it runs (the service is
    /// there, or it is required and the test is to fail without it).
    pub fn missing(self) -> Option<&'static str> {
        match self {
            Needs::Nothing => None,
            Needs::Docker if crate::docker::available() || crate::docker::required() => None,
            Needs::Docker => Some("Docker (USHER_TEST_DOCKER_HOST not set; run under scripts/with-docker)"),
            Needs::Postgres if crate::db::postgres_url().is_some() || crate::db::postgres_required() => None,
            Needs::Postgres => Some("PostgreSQL (TEST_DATABASE_URL not set; run under scripts/with-postgres)"),
            Needs::ObjectStorage if crate::s3::required() => None,
            Needs::ObjectStorage if crate::s3::endpoint().is_none() => {
                Some("S3-compatible storage (USHER_TEST_S3_ENDPOINT not set; run under scripts/with-s3)")
            }
            Needs::ObjectStorage => Needs::Postgres.missing(),
        }
    }
}

/// One test of a binary run by [`run`]: what it needs and how it runs.
pub struct Test {
    needs: Needs,
    trial: Trial,
}

/// The test `name`: `test` on a tokio runtime with `worker_threads`, ignored when what
/// it `needs` is missing.
pub fn test<Fut>(name: &str, needs: Needs, worker_threads: usize, test: fn() -> Fut) -> Test
where
    Fut: Future<Output = ()> + 'static,
{
    let missing = needs.missing();
    let trial = Trial::test(name, move || {
        if let Some(what) = missing {
            // Only reached with --ignored or --include-ignored.
            return Err(format!("cannot run without {what}").into());
        }
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(test());
        Ok(())
    })
    .with_ignored_flag(missing.is_some());
    Test { needs, trial }
}

/// Runs `tests` as the command line asks (filters, `--ignored`, `--test-threads`…),
/// after a line per missing service saying which tests it skips; the exit code is the
/// summary's.
pub fn run(tests: Vec<Test>) -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    for needs in [Needs::Docker, Needs::Postgres, Needs::ObjectStorage] {
        let skipped = tests.iter().filter(|t| t.needs == needs).count();
        if let (Some(what), 1..) = (needs.missing(), skipped) {
            // Straight to the terminal, past any output capture.
            let tests = if skipped == 1 { "test" } else { "tests" };
            let _ = writeln!(std::io::stderr(), "skipped: {what}: {skipped} {tests} reported ignored");
        }
    }
    libtest_mimic::run(&args, tests.into_iter().map(|t| t.trial).collect()).exit_code()
}

/// `tests![needs, worker_threads => [test_fn, …]; …]`: a [`Test`] per `async fn()`
/// named, for [`run`].
#[macro_export]
macro_rules! tests {
    ($($needs:expr, $threads:expr => [$($test:ident),* $(,)?]);* $(;)?) => {{
        let mut tests = Vec::new();
        $($(tests.push($crate::harness::test(stringify!($test), $needs, $threads, $test));)*)*
        tests
    }};
}
