//! TLS end to end with certificates this test makes (a CA and a server certificate for
//! 127.0.0.1): `usher serve --tls-cert --tls-key` serves HTTPS with `Secure` cookies, a
//! standalone runner given the CA with `--ca-file` runs a job over `wss://` and cancels
//! it gracefully, and a runner given another CA is refused with a message that says why.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use usher_testkit::*;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

/// A CA and a certificate for 127.0.0.1 and localhost signed by it: (ca.pem, cert.pem,
/// key.pem) in `dir`.
fn make_certificates(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("Usher test CA {name}"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn runner(base: &str, token: &str, ca: &Path, builds: &Path, log: &Path) -> OwnedChild {
    let log = std::fs::File::create(log).unwrap();
    OwnedChild::spawn(
        runner_command(base, "tls-runner", builds)
            .arg("--ca-file")
            .arg(ca)
            .env("USHER_RUNNER_TOKEN", token)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_runner_over_tls_runs_and_cancels_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path(), "good");
    let (wrong_ca, _, _) = make_certificates(dir.path(), "other");
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cert_s = cert.display().to_string();
    let key_s = key.display().to_string();
    let (_server, base) = spawn_usher(
        USHER,
        data_dir.path(),
        &format!("127.0.0.1:{port}"),
        0,
        &[("USHER_TLS_CERT", cert_s.as_str()), ("USHER_TLS_KEY", key_s.as_str())],
    );
    assert_eq!(base, format!("https://127.0.0.1:{port}"));
    let token = String::from_utf8(run_usher_cli(USHER, data_dir.path(), &["runner-token", "create"], "").stdout).unwrap();
    let mut t = TestServer::detached();
    t.base = base.clone();
    t.client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    // Plain HTTP is not served on the TLS port.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
    );

    let _good = runner(&base, token.trim(), &ca, &dir.path().join("b1"), &dir.path().join("good.log"));
    let bad_log = dir.path().join("bad.log");
    let _bad = runner(&base, token.trim(), &wrong_ca, &dir.path().join("b2"), &bad_log);

    let pipeline = t
        .pipeline("secure:\n  script: [\"echo ready\", \"sleep 300\"]\n  after_script: [\"echo cleaned up over tls\"]\n")
        .await;
    let job = TestServer::job_id(&pipeline, "secure");
    t.wait_for_log(job, "ready").await;
    let (status, _) = t.call("POST", &format!("/api/v1/jobs/{job}/cancel"), None).await;
    assert_eq!(status, 200);
    t.wait_for_status(job, "canceled").await;
    assert!(t.log(job).await.0.contains("cleaned up over tls"));

    // The runner with the wrong CA was refused, and says why.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&bad_log).unwrap_or_default();
        if text.contains("not trusted") && text.contains("--ca-file") {
            break;
        }
        assert!(Instant::now() < deadline, "no clear refusal in the runner's log:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Browser sessions over HTTPS get a Secure cookie.
    let credentials = std::fs::read_to_string(data_dir.path().join("initial-admin-credentials")).unwrap();
    let password = credentials.lines().find_map(|l| l.strip_prefix("password: ")).unwrap();
    let no_redirects = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .post(format!("{base}/auth/login"))
        .header("origin", &base)
        .form(&[("name", "admin"), ("password", password)])
        .send()
        .await
        .unwrap();
    // Over HTTPS the client speaks HTTP/2, as browsers do, where there is no Host
    // header: the same-origin check reads the request's authority instead.
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

/// With TLS on, the server's own local runners still run jobs (over a loopback listener
/// of their own; the public port speaks only HTTPS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runners_work_behind_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path(), "local");
    let data_dir = tempfile::tempdir().unwrap();
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let (_server, base) = spawn_usher(
        USHER,
        data_dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        1,
        &[("USHER_TLS_CERT", cert_s.as_str()), ("USHER_TLS_KEY", key_s.as_str())],
    );
    let mut t = TestServer::detached();
    t.base = base;
    t.client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let pipeline = t.pipeline("here:\n  script: [\"echo local over tls\"]\n").await;
    let job = TestServer::job_id(&pipeline, "here");
    t.wait_for_status(job, "success").await;
    assert!(t.log(job).await.0.contains("local over tls"));
}

/// The certificate most guides make (`openssl req -x509`: self-signed, and a CA by its
/// basic constraints), given to the runner and to the `usher` client as `--ca-file`, is
/// trusted as exactly itself; without it, or for another host name, the refusal names
/// the real cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_given_as_ca_file_is_trusted_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("self.pem"), dir.path().join("self-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (cert_s, key_s) = (cert_path.display().to_string(), key_path.display().to_string());
    let (_server, base) = spawn_usher(
        USHER,
        data_dir.path(),
        &format!("127.0.0.1:{port}"),
        0,
        &[("USHER_TLS_CERT", cert_s.as_str()), ("USHER_TLS_KEY", key_s.as_str())],
    );
    let runner_token = String::from_utf8(run_usher_cli(USHER, data_dir.path(), &["runner-token", "create"], "").stdout).unwrap();
    let api_token = String::from_utf8(run_usher_cli(USHER, data_dir.path(), &["token", "create", "admin"], "").stdout).unwrap();
    let mut t = TestServer::detached();
    t.base = base.clone();
    // The test's own client checks nothing; the runner and `usher` are what is tested.
    t.client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let _runner = runner(
        &base,
        runner_token.trim(),
        &cert_path,
        &dir.path().join("b"),
        &dir.path().join("runner.log"),
    );
    let pipeline = t.pipeline("pinned:\n  script: [\"echo over a pinned certificate\"]\n").await;
    let job = TestServer::job_id(&pipeline, "pinned");
    t.wait_for_status(job, "success").await;
    assert!(t.log(job).await.0.contains("over a pinned certificate"));

    let client = |url: &str, ca: Option<&Path>| {
        let mut command = std::process::Command::new(USHER);
        command.args(["job", "show", &job.to_string(), "--url", url]);
        command.env("USHER_TOKEN", api_token.trim()).env("XDG_CONFIG_HOME", dir.path());
        if let Some(ca) = ca {
            command.arg("--ca-file").arg(ca);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (code, text) = client(&base, Some(&cert_path));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("success"), "{text}");
    let (code, text) = client(&base, None);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("self-signed certificate: pass that certificate itself with --ca-file"),
        "{text}"
    );
    let (code, text) = client(&format!("https://localhost:{port}"), Some(&cert_path));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not for this host name"), "{text}");
}
