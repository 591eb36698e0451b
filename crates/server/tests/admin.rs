//! The admin API over HTTP: keys created, listed and revoked by an admin,
//! the audit log read back in pages, bad input answered with 4xx.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{call, new_key, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_keys_and_reads_the_audit_log() {
    let s = start(false).await;
    let mut admin = new_key("root");
    admin.roles = ["admin".to_string()].into();
    let (_, admin) = s
        .authenticator
        .keys()
        .create(&admin, auth::unix_now())
        .unwrap();
    let admin = format!("Bearer {admin}");
    let as_admin = [("authorization", admin.as_str())];

    // Create: the secret is in the answer, once.
    let body = json!({"name": "ward 3", "roles": ["user"], "attrs": {"department": "radiology"},
                      "priority": "batch", "expires_in": "30d", "limits": {"requests_per_minute": 5}});
    let (status, _, text) = call(
        &s.base,
        &Method::POST,
        "/admin/keys",
        Some(&body),
        &as_admin,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    let (id, secret) = (
        created["id"].as_str().unwrap().to_string(),
        created["key"].as_str().unwrap().to_string(),
    );
    assert!(secret.starts_with(&format!("hth_{id}_")));
    assert_eq!(created["priority"], "batch");
    assert_eq!(created["limits"]["requests_per_minute"], 5);
    let new = format!("Bearer {secret}");
    let as_new = [("authorization", new.as_str())];
    let (status, headers, _) = call(&s.base, &Method::GET, "/v1/models", None, &as_new).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-ratelimit-limit-requests"], "5");

    // List: every key, never a secret.
    let (status, _, text) = call(&s.base, &Method::GET, "/admin/keys", None, &as_admin).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{text}");
    assert!(names.contains(&"ward 3"));
    assert!(!text.contains(&secret[20..]), "{text}");

    // The new key is a user: the admin API refuses it.
    let (status, _, _) = call(&s.base, &Method::GET, "/admin/keys", None, &as_new).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Revoke: refused from the next request on.
    let path = format!("/admin/keys/{id}");
    let (status, _, text) = call(&s.base, &Method::DELETE, &path, None, &as_admin).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, _, _) = call(&s.base, &Method::GET, "/v1/models", None, &as_new).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bad input: 4xx in OpenAI's shape, nothing created.
    for (method, path, body, expected) in [
        (
            Method::DELETE,
            "/admin/keys/ffffffffffff",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/admin/keys",
            Some(json!({"name": ""})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/keys",
            Some(json!({"name": "x", "priority": "urgent"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/keys",
            Some(json!({"name": "x", "expires_in": "soon"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/keys",
            Some(json!({"name": "x", "secret": "mine"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/admin/audit?since=whenever",
            None,
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, _, text) = call(&s.base, &method, path, body.as_ref(), &as_admin).await;
        assert_eq!(status, expected, "{method} {path}: {text}");
        let err: Value = serde_json::from_str(&text).unwrap();
        assert!(err["error"]["message"].is_string(), "{text}");
    }
    assert_eq!(s.authenticator.keys().list().unwrap().len(), 2);

    // The audit log, read back: the key's creation and revocation, and the
    // requests, as JSON lines with their hashes.
    let (status, headers, text) = call(
        &s.base,
        &Method::GET,
        "/admin/audit?since=1h",
        None,
        &as_admin,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"key_created") && kinds.contains(&"key_revoked"),
        "{kinds:?}"
    );
    assert!(entries.iter().all(|e| e["hash"].is_string()));
    let revoked = entries
        .iter()
        .find(|e| e["event"] == "api_request" && e["method"] == "DELETE")
        .expect("the revocation request is recorded");
    assert_eq!(revoked["action"], "manage_keys");
    assert!(revoked["principal"].as_str().unwrap().starts_with("key:"));
    // Paging: two at a time, on from the last sequence number seen.
    let first_two = "/admin/audit?limit=2&after_seq=0";
    let (_, _, page) = call(&s.base, &Method::GET, first_two, None, &as_admin).await;
    let page: Vec<Value> = page
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(page.len(), 2);
    let last = page[1]["seq"].as_u64().unwrap();
    let next = format!("/admin/audit?limit=2&after_seq={last}");
    let (_, _, page) = call(&s.base, &Method::GET, &next, None, &as_admin).await;
    let first: Value = serde_json::from_str(page.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"].as_u64(), Some(last + 1));
}
