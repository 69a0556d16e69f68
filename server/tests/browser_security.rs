//! Browser-facing defences over real HTTP: sign-in with an HttpOnly SameSite cookie,
//! pages need a session, and cookie-authenticated writes or websocket upgrades from
//! another site are refused while the same request from our own pages goes through.

use usher_core::roles::Role;
use usher_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_with_the_session_cookie_are_refused() {
    let t = TestServer::start(0).await;
    t.server
        .as_ref()
        .unwrap()
        .engine
        .add_user("dev", Role::Developer, Some("dev-password"))
        .await
        .unwrap();
    let pipeline = t.pipeline("waiting:\n  script: [sleep 1]\n").await;
    let job_id = TestServer::job_id(&pipeline, "waiting");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Pages need a session.
    let resp = no_redirects
        .get(format!("{}/pipelines/{}", t.base, pipeline["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert!(resp.headers()["location"].to_str().unwrap().starts_with("/login"));
    // A wrong password signs nobody in.
    let resp = no_redirects
        .post(format!("{}/auth/login", t.base))
        .header("origin", &t.base)
        .form(&[("name", "dev"), ("password", "nope")])
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("set-cookie").is_none());

    let cookie = sign_in(&t, "dev", "dev-password").await;
    let page = no_redirects
        .get(format!("{}/pipelines/{}", t.base, pipeline["id"]))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    let action = html
        .split("action=\"/ui/cancel_job")
        .nth(1)
        .map(|rest| format!("/ui/cancel_job{}", rest.split('"').next().unwrap()))
        .expect("a Cancel form");

    // The same form post from another site is refused and changes nothing…
    let evil = no_redirects
        .post(format!("{}{action}", t.base))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&[("job_id", job_id.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status().as_u16(), 403);
    assert_eq!(t.job(job_id).await["status"], "pending");
    // …and so is a request that says nothing about where it comes from.
    let silent = no_redirects
        .post(format!("{}{action}", t.base))
        .header("cookie", &cookie)
        .form(&[("job_id", job_id.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(silent.status().as_u16(), 403);
    assert_eq!(t.job(job_id).await["status"], "pending");

    // From our own page it goes through.
    let ours = no_redirects
        .post(format!("{}{action}", t.base))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .header("accept", "application/json")
        .form(&[("job_id", job_id.to_string())])
        .send()
        .await
        .unwrap();
    assert!(ours.status().is_success(), "{}", ours.status());
    assert_eq!(t.job(job_id).await["status"], "canceled");

    // A cross-site websocket with the cookie is refused; a same-origin one is accepted.
    let ws_url = format!("ws://{}/api/v1/events", t.base.trim_start_matches("http://"));
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(request).await.is_err(),
        "cross-site websocket accepted"
    );
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    request.headers_mut().insert("origin", t.base.parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(request).await.is_ok(),
        "same-origin websocket refused"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_may_cancel_but_not_abort_over_http() {
    let t = TestServer::start(0).await;
    let engine = &t.server.as_ref().unwrap().engine;
    engine.add_user("dev", Role::Developer, None).await.unwrap();
    engine.add_user("view", Role::Viewer, None).await.unwrap();
    let dev = engine.create_api_token("dev").await.unwrap();
    let view = engine.create_api_token("view").await.unwrap();
    let pipeline = t.pipeline("a:\n  script: [x]\nb:\n  script: [x]\n").await;
    let (a, b) = (TestServer::job_id(&pipeline, "a"), TestServer::job_id(&pipeline, "b"));
    let (status, body) = t.call_as(&view, "POST", &format!("/api/v1/jobs/{a}/cancel"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = t.call_as(&dev, "POST", &format!("/api/v1/jobs/{a}/abort"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = t.call_as(&dev, "POST", &format!("/api/v1/jobs/{b}/cancel"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("canceled")), "{body}");
    let (status, _) = t.call_as(&view, "GET", &format!("/api/v1/jobs/{a}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(t.job(a).await["status"], "pending", "refused calls changed nothing");
    t.stop().await;
}
