//! Quotas over HTTP: a real key store and engine, concurrent clients on
//! loopback.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{call, new_key, start, Served};

fn chat(max_tokens: u32) -> Value {
    json!({"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens})
}

fn key_with(s: &Served, name: &str, limits: auth::Limits) -> String {
    let mut k = new_key(name);
    k.limits = limits;
    let (_, secret) = s.authenticator.keys().create(&k, auth::unix_now()).unwrap();
    format!("Bearer {secret}")
}

/// The acceptance point: 50 simultaneous requests on a key allowed 10 a
/// minute admit exactly 10; the rest get OpenAI's 429 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_on_ten_per_minute_admit_exactly_ten() {
    let s = start(false).await;
    let limited = key_with(
        &s,
        "ten a minute",
        auth::Limits {
            requests_per_minute: Some(10),
            ..auth::Limits::default()
        },
    );
    let free = key_with(&s, "unlimited", auth::Limits::default());
    let body = chat(1);
    let calls = (0..50).map(|_| {
        let (base, auth, body) = (s.base.clone(), limited.clone(), body.clone());
        tokio::spawn(async move {
            call(
                &base,
                &Method::POST,
                "/v1/chat/completions",
                Some(&body),
                &[("authorization", &auth)],
            )
            .await
        })
    });
    let answers = futures::future::join_all(calls).await;
    let (mut ok, mut limited_count) = (0, 0);
    for answer in answers {
        let (status, headers, text) = answer.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited_count += 1;
                let secs: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=6).contains(&secs), "retry after {secs}");
                let err: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(err["error"]["code"], "rate_limit_exceeded", "{text}");
                assert_eq!(err["error"]["type"], "requests", "{text}");
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert_eq!((ok, limited_count), (10, 40));
    // Another key is not affected by this one's limit.
    let (status, headers, _) = call(
        &s.base,
        &Method::GET,
        "/v1/models",
        None,
        &[("authorization", &free)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("x-ratelimit-limit-requests").is_none());
}

/// Tokens used are charged after the answer: a daily budget a first
/// request spends refuses the next with `insufficient_quota`, and admitted
/// requests carry OpenAI's rate-limit headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_daily_budget_refuses_until_midnight() {
    let s = start(false).await;
    let key = key_with(
        &s,
        "budget",
        auth::Limits {
            requests_per_minute: Some(100),
            tokens_per_minute: Some(10_000),
            tokens_per_day: Some(12),
        },
    );
    let post = |body: Value| {
        let (base, key) = (s.base.clone(), key.clone());
        async move {
            call(
                &base,
                &Method::POST,
                "/v1/chat/completions",
                Some(&body),
                &[("authorization", &key)],
            )
            .await
        }
    };
    // The templated prompt (10 tokens) and 4 generated ones spend the 12.
    let (status, headers, text) = post(chat(4)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let used: Value = serde_json::from_str(&text).unwrap();
    let total = used["usage"]["total_tokens"].as_u64().unwrap();
    assert!(total >= 12, "{text}");
    assert_eq!(headers["x-ratelimit-limit-requests"], "100");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "99");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "10000");
    // 4 tokens were reserved for `max_tokens` when the headers were set.
    assert_eq!(headers["x-ratelimit-remaining-tokens"], "9996");
    let (status, headers, text) = post(chat(1)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"]["code"], "insufficient_quota", "{text}");
    let secs: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&secs));
    // Streaming is charged too: a second key streams, then is refused.
    let streamer = key_with(
        &s,
        "stream budget",
        auth::Limits {
            tokens_per_day: Some(12),
            ..auth::Limits::default()
        },
    );
    let mut body = chat(4);
    body["stream"] = json!(true);
    for expected in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        let (status, _, text) = call(
            &s.base,
            &Method::POST,
            "/v1/chat/completions",
            Some(&body),
            &[("authorization", &streamer)],
        )
        .await;
        assert_eq!(status, expected, "{text}");
    }
}

/// A minute's tokens spent by one answer refuse the next request with
/// `rate_limit_exceeded` of type `tokens`; another key is untouched. The
/// answer used more than the minute allows (the templated prompt alone is
/// longer), and the debt is paid back at the limit's rate: Retry-After is
/// the time until the bucket holds a token again, past the minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_refuse_within_the_minute() {
    let s = start(false).await;
    let limited = key_with(
        &s,
        "tpm",
        auth::Limits {
            tokens_per_minute: Some(12),
            ..auth::Limits::default()
        },
    );
    let other = key_with(&s, "other", auth::Limits::default());
    let post = |key: String| {
        let base = s.base.clone();
        async move {
            call(
                &base,
                &Method::POST,
                "/v1/chat/completions",
                Some(&chat(4)),
                &[("authorization", &key)],
            )
            .await
        }
    };
    let (status, headers, text) = post(limited.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "12");
    let used: Value = serde_json::from_str(&text).unwrap();
    let total = used["usage"]["total_tokens"].as_u64().unwrap();
    assert!(total > 12, "{text}");
    let (status, headers, text) = post(limited).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded", "{text}");
    assert_eq!(err["error"]["type"], "tokens", "{text}");
    let secs: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    // 12 tokens a minute refill one every 5 s.
    let debt_secs = (total - 12) * 5;
    assert!(
        (debt_secs.saturating_sub(30)..=debt_secs + 1).contains(&secs),
        "{secs} s for a debt of {} tokens",
        total - 12
    );
    let (status, _, text) = post(other).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

/// Regression: a request without `max_tokens` reserved nothing, so any
/// number of them got past a token budget at once. It now reserves a full
/// context's worth while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_out_max_tokens_does_not_dodge_a_budget() {
    let s = start(false).await;
    let key = key_with(
        &s,
        "open-ended",
        auth::Limits {
            tokens_per_day: Some(1000),
            ..auth::Limits::default()
        },
    );
    let body = json!({"messages": [{"role": "user", "content": "Tell me a story"}],
                      "stream": true, "ignore_eos": true});
    let client = reqwest::Client::new();
    let first = client
        .post(format!("{}/v1/chat/completions", s.base))
        .header("authorization", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // While the first runs, its reservation holds the budget.
    let (status, _, text) = call(
        &s.base,
        &Method::POST,
        "/v1/chat/completions",
        Some(&body),
        &[("authorization", &key)],
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    drop(first);
}
