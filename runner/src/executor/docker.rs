//! The docker executor: a job's shells are `docker exec`s into its own long-lived
//! container (`crate::container`), which gets the job's Docker API (`crate::docker_proxy`)
//! as its `DOCKER_HOST`. A stop signals every process in the container; the script's
//! directory at the stop comes from its saved state. At the end the job's Docker API is
//! closed and everything labelled with the job is removed.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use usher_core::api::DockerRemoved;
use usher_core::protocol::JobReport;

use super::JobExecutor;
use crate::container::{self, JobContainer};
use crate::docker::Docker;
use crate::docker_proxy::DockerProxy;
use crate::job_run::JobRun;
use crate::output::OutputPump;
use crate::script::Shell;
use crate::spawn::JobProcess;

/// One job under the docker executor.
pub(crate) struct DockerJob {
    docker: Docker,
    /// The job's Docker API, once started.
    proxy: Mutex<Option<DockerProxy>>,
    /// The container the job's shells run in, once started.
    container: OnceLock<JobContainer>,
}

impl DockerJob {
    pub(crate) fn new(docker: &Docker) -> DockerJob {
        DockerJob {
            docker: docker.clone(),
            proxy: Mutex::new(None),
            container: OnceLock::new(),
        }
    }
}

impl JobExecutor for DockerJob {
    // Whatever shell the image has: the files are written for a POSIX sh.
    fn shell(&self) -> Shell {
        Shell::Posix
    }

    // A container's shell gets the job's variables from the file itself.
    fn exports(&self, run: &JobRun<'_>) -> String {
        let mut vars = run.job.variables.clone();
        vars.push(("CI_PROJECT_DIR".into(), run.build_dir.to_string_lossy().into_owned()));
        crate::script::exports_text(&vars)
    }

    fn start<'a>(&'a self, run: &'a JobRun<'a>) -> BoxFuture<'a, Result<(), JobReport>> {
        Box::pin(async move {
            let socket = run.meta_dir.join("docker.sock");
            let socket = match DockerProxy::start(&socket, &self.docker, run.job.job_id) {
                Ok(proxy) => {
                    *self.proxy.lock().unwrap() = Some(proxy);
                    Some(socket)
                }
                Err(e) => {
                    run.log.note(&format!("The job gets no Docker API: {e}"));
                    None
                }
            };
            let started = container::start(run, &self.docker, socket.as_deref())
                .await
                .map_err(|e| e.into_report(&run.log))?;
            let _ = self.container.set(started);
            Ok(())
        })
    }

    fn spawn_shell(&self, run: &JobRun<'_>, file: &Path) -> std::io::Result<(JobProcess, OutputPump)> {
        let container = self
            .container
            .get()
            .ok_or_else(|| std::io::Error::other("the job's container is not running"))?;
        let args = container.exec_args(run, file);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let env = [("DOCKER_HOST".to_string(), container.docker.host())];
        run.spawn_tool("docker", &args, &run.build_dir, &env, false)
    }

    fn signal(&self, _pgid: u32, signal: Signal) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(container) = self.container.get() {
                container.signal_all(signal).await;
            }
        })
    }

    // The saved state says where the script was.
    fn cwd_at_stop(&self, _pgid: u32) -> Option<PathBuf> {
        None
    }

    fn quiesce(&self) -> BoxFuture<'_, ()> {
        self.signal(0, Signal::SIGKILL)
    }

    // The container's root is confined to the build directory's mount.
    fn reads_artifacts_as_job_user(&self) -> bool {
        false
    }

    fn finish<'a>(&'a self, run: &'a JobRun<'a>) -> BoxFuture<'a, (DockerRemoved, u32)> {
        Box::pin(async move {
            let proxy = self.proxy.lock().unwrap().take();
            if let Some(proxy) = proxy {
                proxy.close().await;
            }
            container::tear_down(&self.docker, run.job.job_id, &run.log).await
        })
    }
}
