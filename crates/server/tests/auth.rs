//! Authentication over HTTP: a real key store, a real engine, loopback.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{
    call, issuer, new_key, provider, staff, start, start_full, start_with, with,
    SERVED_BESIDE_A_STORE,
};
use testkit::jwt::{jwks, Signer};
use types::Priority;

/// A key id the admin routes' DELETE revokes again and again.
const THROWAWAY: &str = "00000000000a";

/// Every API route with a request it accepts, and whether it is an admin
/// route (which the default policies open to the `admin` role only).
/// Generation routes name the served `model`; `/api/pull`, `/api/delete`
/// and the peer routes name the catalog's `smollm2` in the server's store
/// (peer routes are the `node` role's and the admin's). The responses paths
/// name no response: [`permitted`] creates one for each call.
fn api_routes(model: &str) -> Vec<(Method, String, Option<Value>, bool)> {
    let chat =
        json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1});
    let completion = json!({"model": model, "prompt": "Hi", "max_tokens": 1});
    let new_key = json!({"name": "made over HTTP", "roles": ["user"]});
    let message =
        json!({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]});
    let count = json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]});
    let embed = json!({"model": model, "input": "Hi"});
    let ollama_chat = json!({"model": model, "stream": false, "options": {"num_predict": 1},
                             "messages": [{"role": "user", "content": "Hi"}]});
    let ollama_generate =
        json!({"model": model, "stream": false, "prompt": "Hi", "options": {"num_predict": 1}});
    vec![
        (Method::GET, "/v1/models".into(), None, false),
        (Method::GET, format!("/v1/models/{model}"), None, false),
        (
            Method::POST,
            "/v1/chat/completions".into(),
            Some(chat),
            false,
        ),
        (
            Method::POST,
            "/v1/completions".into(),
            Some(completion),
            false,
        ),
        (Method::GET, "/admin/keys".into(), None, true),
        (Method::POST, "/admin/keys".into(), Some(new_key), true),
        (
            Method::DELETE,
            format!("/admin/keys/{THROWAWAY}"),
            None,
            true,
        ),
        (
            Method::POST,
            format!("/admin/models/{model}/reload"),
            None,
            true,
        ),
        (Method::GET, "/admin/audit?since=1h".into(), None, true),
        (Method::POST, "/v1/messages".into(), Some(message), false),
        (
            Method::POST,
            "/v1/messages/count_tokens".into(),
            Some(count),
            false,
        ),
        (Method::POST, "/v1/embeddings".into(), Some(embed), false),
        (
            Method::POST,
            "/tokenize".into(),
            Some(json!({"content": "Hi"})),
            false,
        ),
        (
            Method::POST,
            "/detokenize".into(),
            Some(json!({"tokens": [1, 2]})),
            false,
        ),
        (
            Method::POST,
            "/v1/responses".into(),
            Some(json!({"model": model, "input": "Hi", "max_output_tokens": 1})),
            false,
        ),
        (Method::GET, "/v1/responses/resp_none".into(), None, false),
        (
            Method::DELETE,
            "/v1/responses/resp_none".into(),
            None,
            false,
        ),
        (Method::POST, "/api/chat".into(), Some(ollama_chat), false),
        (
            Method::POST,
            "/api/generate".into(),
            Some(ollama_generate),
            false,
        ),
        (
            Method::POST,
            "/api/embed".into(),
            Some(json!({"model": model, "input": "Hi"})),
            false,
        ),
        (
            Method::POST,
            "/api/embeddings".into(),
            Some(json!({"model": model, "prompt": "Hi"})),
            false,
        ),
        (Method::GET, "/api/tags".into(), None, false),
        (Method::GET, "/api/ps".into(), None, false),
        (
            Method::POST,
            "/api/show".into(),
            Some(json!({"model": model})),
            false,
        ),
        (Method::GET, "/api/version".into(), None, false),
        (
            Method::POST,
            "/api/pull".into(),
            Some(json!({"model": "smollm2", "stream": false})),
            true,
        ),
        (
            Method::DELETE,
            "/api/delete".into(),
            Some(json!({"model": "smollm2"})),
            true,
        ),
        (Method::GET, "/peer/v1/models/smollm2".into(), None, true),
        (Method::GET, smollm2_file(), None, true),
    ]
}

/// The catalog model's file on the peer route.
fn smollm2_file() -> String {
    let sha256 = store::catalog::find("smollm2").unwrap().sha256;
    format!("/peer/v1/models/smollm2/files/sha256-{sha256}")
}

/// Calls a route as a principal the policies allow, first making what the
/// call acts on exist for that principal: a stored response of its own for
/// the responses paths, the stored model for `/api/delete`. Every such call
/// must succeed: a handler refusing it would hide whether the layers
/// before it let the request through.
async fn permitted(
    s: &support::Served,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut path = path.to_string();
    if path.starts_with("/v1/responses/") {
        let create = json!({"model": SERVED_BESIDE_A_STORE, "input": "Hi", "max_output_tokens": 1});
        let (status, _, text) = call(
            &s.base,
            &Method::POST,
            "/v1/responses",
            Some(&create),
            headers,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        path = format!("/v1/responses/{id}");
    }
    if path == "/api/delete" || path.starts_with("/peer/") {
        let pull = json!({"model": "smollm2", "stream": false});
        let (status, _, text) =
            call(&s.base, &Method::POST, "/api/pull", Some(&pull), headers).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    let (status, _, text) = call(&s.base, method, &path, body, headers).await;
    (status, text)
}

/// The error code a refusal carries, in the shape of the route's API
/// family: OpenAI's `error.code`, Anthropic's `error.type` under
/// `"type": "error"`, or `ollama` for Ollama's bare `{"error": message}`.
fn error_code(path: &str, text: &str) -> String {
    let err: Value = serde_json::from_str(text).unwrap();
    if path.starts_with("/api/") {
        // Ollama's shape has a message and nothing else.
        assert!(err["error"].is_string(), "{text}");
        assert_eq!(err.as_object().unwrap().len(), 1, "{text}");
        "ollama".to_string()
    } else if path.starts_with("/v1/messages") {
        assert_eq!(err["type"], "error", "{text}");
        err["error"]["type"].as_str().unwrap().to_string()
    } else {
        err["error"]["code"].as_str().unwrap().to_string()
    }
}

/// A key the DELETE route can revoke, whose id is [`THROWAWAY`].
fn throwaway_key(s: &support::Served) {
    let conn = rusqlite::Connection::open(s.authenticator.keys().path()).unwrap();
    conn.execute(
        "INSERT INTO api_keys (id, name, secret_sha256, roles, attrs, created_at) VALUES (?1, 'throwaway', x'00', '[]', '{}', 0)",
        [THROWAWAY],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_a_key_exists_every_api_route_needs_one() {
    let signer = Signer::es256("2026-11");
    let idp = provider(jwks(&[&signer])).await;
    let s = start_full(false, vec![issuer(&idp.url)], true).await;
    // A configured issuer requires credentials before any key exists.
    let (status, _, _) = call(&s.base, &Method::GET, "/v1/models", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let jwt = |claims: &Value| format!("Bearer {}", signer.sign(claims));
    let expired = jwt(&with(
        staff(&["user"]),
        "exp",
        json!(auth::unix_now() - 3600),
    ));
    let wrong_audience = jwt(&with(staff(&["user"]), "aud", json!("billing")));
    let unknown_key = format!(
        "Bearer {}",
        Signer::other_eddsa("stolen").sign(&staff(&["user"]))
    );
    // Permitted on every route: users use models, admins administer.
    let valid_jwt = jwt(&staff(&["user", "admin"]));
    let now = auth::unix_now();
    let keys = s.authenticator.keys();
    throwaway_key(&s);
    let mut good_key = new_key("good");
    good_key.roles.insert("admin".into());
    let (_, good) = keys.create(&good_key, now).unwrap();
    let (revoked_info, revoked) = keys.create(&new_key("gone"), now).unwrap();
    keys.revoke(&revoked_info.id, now).unwrap();
    let bearer = |k: &str| format!("Bearer {k}");
    let (good_bearer, revoked_bearer) = (bearer(&good), bearer(&revoked));
    // The same key with its last hex digit changed (never equal to it).
    let last = if good.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &good[..good.len() - 1]);
    let wrong_bearer = bearer(&wrong);
    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no credentials", vec![]),
        (
            "malformed header",
            vec![("authorization", "Basic dXNlcjpwYXNz")],
        ),
        ("wrong key", vec![("authorization", wrong_bearer.as_str())]),
        (
            "revoked key",
            vec![("authorization", revoked_bearer.as_str())],
        ),
        ("expired JWT", vec![("authorization", expired.as_str())]),
        (
            "JWT for another audience",
            vec![("authorization", wrong_audience.as_str())],
        ),
        (
            "JWT signed by an unknown key",
            vec![("authorization", unknown_key.as_str())],
        ),
    ];
    let mut routes = api_routes(SERVED_BESIDE_A_STORE);
    routes.push((Method::GET, "/metrics".into(), None, false));
    for (method, path, body, _) in &routes {
        for (case, headers) in &refused {
            let (status, h, text) = call(&s.base, method, path, body.as_ref(), headers).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{case}: {method} {path}: {text}"
            );
            assert!(h["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
            let expected = if path.starts_with("/api/") {
                "ollama"
            } else if path.starts_with("/v1/messages") {
                "authentication_error"
            } else {
                "invalid_api_key"
            };
            assert_eq!(error_code(path, &text), expected, "{text}");
            assert!(
                !text.contains(&good[8..]) && !text.contains(&wrong[8..]),
                "{text}"
            );
        }
        for headers in [
            vec![("authorization", good_bearer.as_str())],
            vec![("x-api-key", good.as_str())],
            vec![("authorization", valid_jwt.as_str())],
        ] {
            let (status, text) = permitted(&s, method, path, body.as_ref(), &headers).await;
            assert!(status.is_success(), "{method} {path}: {status} {text}");
        }
    }
    for path in ["/health", "/ready"] {
        let (status, _, _) = call(&s.base, &Method::GET, path, None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path} stays open");
    }
    // Revoking the last good key does not open the server again.
    let good_id = good.split('_').nth(1).unwrap();
    keys.revoke(good_id, auth::unix_now()).unwrap();
    let (status, _, _) = call(
        &s.base,
        &Method::GET,
        "/v1/models",
        None,
        &[("authorization", &good_bearer)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(&s.base, &Method::GET, "/v1/models", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_metrics_need_no_key_while_the_api_does() {
    let s = start(true).await;
    s.authenticator
        .keys()
        .create(&new_key("k"), auth::unix_now())
        .unwrap();
    let (status, _, _) = call(&s.base, &Method::GET, "/metrics", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&s.base, &Method::GET, "/v1/models", None, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_key_cannot_ask_for_interactive() {
    let s = start(false).await;
    let now = auth::unix_now();
    let mut batch = new_key("nightly");
    batch.priority = Some(Priority::Batch);
    let (_, batch_key) = s.authenticator.keys().create(&batch, now).unwrap();
    let (_, free_key) = s
        .authenticator
        .keys()
        .create(&new_key("desk"), now)
        .unwrap();
    let body = |priority: &str| json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "priority": priority});
    for (key, asked) in [
        (&batch_key, "interactive"),
        (&batch_key, "batch"),
        (&free_key, "interactive"),
        (&free_key, "batch"),
    ] {
        let auth = format!("Bearer {key}");
        let (status, _, text) = call(
            &s.base,
            &Method::POST,
            "/v1/chat/completions",
            Some(&body(asked)),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    assert_eq!(
        *s.seen.lock().unwrap(),
        [
            Priority::Batch,
            Priority::Batch,
            Priority::Interactive,
            Priority::Batch
        ]
    );
}

/// The route table is the single source: every API route it lists answers
/// a principal the policies allow, and refuses one they do not with 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_asks_the_policies() {
    let signer = Signer::eddsa("k1");
    let idp = provider(jwks(&[&signer])).await;
    let mut s = start_full(false, vec![issuer(&idp.url)], true).await;
    s.signer = signer;
    let now = auth::unix_now();
    let (_, user) = s
        .authenticator
        .keys()
        .create(&new_key("user"), now)
        .unwrap();
    let mut nobody = new_key("no roles");
    nobody.roles.clear();
    let (_, nobody) = s.authenticator.keys().create(&nobody, now).unwrap();
    throwaway_key(&s);
    let listed: Vec<(String, String)> = server::API_ROUTES
        .iter()
        .map(|r| {
            let path = match r.path {
                "/v1/models/{id}" => format!("/v1/models/{SERVED_BESIDE_A_STORE}"),
                "/admin/keys/{id}" => format!("/admin/keys/{THROWAWAY}"),
                "/admin/models/{name}/reload" => {
                    format!("/admin/models/{SERVED_BESIDE_A_STORE}/reload")
                }
                "/v1/responses/{id}" => "/v1/responses/resp_none".to_string(),
                "/peer/v1/models/{name}" => "/peer/v1/models/smollm2".to_string(),
                "/peer/v1/models/{name}/files/{file}" => smollm2_file(),
                other => other.to_string(),
            };
            (r.method.to_string(), path)
        })
        .collect();
    let tested: Vec<(String, String)> = api_routes(SERVED_BESIDE_A_STORE)
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), p.split('?').next().unwrap().to_string()))
        .collect();
    assert_eq!(listed, tested, "the test covers exactly the route table");
    let sign = |roles: &[&str]| format!("Bearer {}", s.signer.sign(&staff(roles)));
    let (user_jwt, admin_jwt, roleless_jwt) =
        (sign(&["user"]), sign(&["admin"]), sign(&["visitor"]));
    let (user_key, nobody_key) = (format!("Bearer {user}"), format!("Bearer {nobody}"));
    for (method, path, body, admin_route) in api_routes(SERVED_BESIDE_A_STORE) {
        // `None`: allowed.
        let user_expected = admin_route.then_some(StatusCode::FORBIDDEN);
        for (who, auth, expected) in [
            ("user JWT", &user_jwt, user_expected),
            ("user key", &user_key, user_expected),
            ("admin JWT", &admin_jwt, None),
            ("roleless JWT", &roleless_jwt, Some(StatusCode::FORBIDDEN)),
            ("roleless key", &nobody_key, Some(StatusCode::FORBIDDEN)),
        ] {
            let headers = [("authorization", auth.as_str())];
            let (status, text) = match expected {
                Some(_) => {
                    let (status, _, text) =
                        call(&s.base, &method, &path, body.as_ref(), &headers).await;
                    (status, text)
                }
                None => permitted(&s, &method, &path, body.as_ref(), &headers).await,
            };
            match expected {
                Some(expected) => assert_eq!(status, expected, "{who}: {method} {path}: {text}"),
                None => assert!(
                    status.is_success(),
                    "{who}: {method} {path}: {status} {text}"
                ),
            }
            if status == StatusCode::FORBIDDEN {
                let expected = if path.starts_with("/api/") {
                    "ollama"
                } else if path.starts_with("/v1/messages") {
                    "permission_error"
                } else {
                    "permission_denied"
                };
                assert_eq!(error_code(&path, &text), expected, "{text}");
            }
        }
    }
}

/// A provider rotates its signing key: the first token under the new key
/// fetches the new JWKS and passes; a flood of unknown keys costs one fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_provider_key_is_fetched_on_first_use() {
    let old = Signer::es256("2026-10");
    let new = Signer::eddsa("2026-11");
    let idp = provider(jwks(&[&old])).await;
    let s = start_with(false, vec![issuer(&idp.url)]).await;
    let get = |token: String| {
        let base = s.base.clone();
        async move {
            let auth = format!("Bearer {token}");
            call(
                &base,
                &Method::GET,
                "/v1/models",
                None,
                &[("authorization", &auth)],
            )
            .await
            .0
        }
    };
    assert_eq!(get(old.sign(&staff(&["user"]))).await, StatusCode::OK);
    let fetched = idp.fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fetched, 1, "fetched once at start");
    *idp.document.lock().unwrap() = jwks(&[&old, &new]);
    assert_eq!(get(new.sign(&staff(&["user"]))).await, StatusCode::OK);
    for i in 0..5 {
        let forged = Signer::other_eddsa(&format!("forged-{i}")).sign(&staff(&["user"]));
        assert_eq!(get(forged).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        idp.fetches.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one fetch for the rotation, none for the forgeries within 10 s"
    );
}

/// The provider withdraws a key (it leaked): the timed refresh, with no
/// request asking for it, drops the key, and tokens it signed stop working.
/// A known `kid` never triggers a fetch on demand, so only the timer can
/// notice a withdrawal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_provider_key_stops_working_at_the_next_timed_refresh() {
    let leaked = Signer::es256("2026-10");
    let current = Signer::eddsa("2026-11");
    let idp = provider(jwks(&[&leaked, &current])).await;
    let mut config = issuer(&idp.url);
    config.jwks_refresh_secs = 10;
    // The refresh timer starts with the server, so the clock must too: a
    // server slow to start under a loaded CI left less than 9 s between a
    // clock started after it and the refresh (flaky failure at a8d5f7f).
    let started = std::time::Instant::now();
    let s = start_with(false, vec![config]).await;
    let get = |token: String| {
        let base = s.base.clone();
        async move {
            let auth = format!("Bearer {token}");
            call(
                &base,
                &Method::GET,
                "/v1/models",
                None,
                &[("authorization", &auth)],
            )
            .await
            .0
        }
    };
    assert_eq!(get(leaked.sign(&staff(&["user"]))).await, StatusCode::OK);
    *idp.document.lock().unwrap() = jwks(&[&current]);
    // Before the interval, the cached keys stand.
    assert_eq!(get(leaked.sign(&staff(&["user"]))).await, StatusCode::OK);
    let fetches = || idp.fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fetches(), 1);
    while fetches() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no timed refresh"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(9));
    // The fetch has landed once its count moved; give it the install.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        get(leaked.sign(&staff(&["user"]))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(current.sign(&staff(&["user"]))).await, StatusCode::OK);
}
