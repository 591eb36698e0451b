//! OpenAI's Responses API over HTTP on the real engine: the object, its
//! typed event stream, stored responses and `previous_response_id`, tools
//! and structured output, whose responses a principal may see, bad input.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::openai::{assert_openai_error, client, post, start};

async fn get(base: &str, id: &str) -> (StatusCode, Value) {
    let resp = client()
        .get(format!("{base}/v1/responses/{id}"))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_stored_response_can_be_read_continued_and_deleted() {
    let base = start().await;
    let (s, first) = post(
        &base,
        "/v1/responses",
        json!({"model": "smollm2", "input": "My name is Ada. Say hello.",
        "instructions": "Answer in one sentence.", "max_output_tokens": 20, "temperature": 0}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"));
    assert_eq!(first["object"], "response");
    assert!(["completed", "incomplete"].contains(&first["status"].as_str().unwrap()));
    assert_eq!(first["output"][0]["type"], "message");
    assert_eq!(first["output"][0]["content"][0]["type"], "output_text");
    assert!(!first["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(first["instructions"], "Answer in one sentence.");
    let u = &first["usage"];
    assert_eq!(
        u["total_tokens"],
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );
    assert_eq!(get(&base, id).await, (StatusCode::OK, first.clone()));

    // The follow-up's prompt holds the first exchange.
    let (s, second) = post(
        &base,
        "/v1/responses",
        json!({"model": "smollm2", "input": "What is my name?",
        "previous_response_id": id, "max_output_tokens": 10}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(second["previous_response_id"], id);
    let carried = u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap();
    assert!(
        second["usage"]["input_tokens"].as_u64().unwrap() > carried,
        "{second}"
    );

    let resp = client()
        .delete(format!("{base}/v1/responses/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    let (s, b) = get(&base, id).await;
    assert_openai_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = post(
        &base,
        "/v1/responses",
        json!({"input": "again", "previous_response_id": id}),
    )
    .await;
    assert_openai_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "previous_response_not_found",
    );

    // `store: false` keeps nothing.
    let (_, unstored) = post(
        &base,
        "/v1/responses",
        json!({"input": "Hi", "store": false, "max_output_tokens": 2}),
    )
    .await;
    assert_eq!(unstored["store"], false);
    let (s, _) = get(&base, unstored["id"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_stream_is_the_typed_event_sequence_and_ends_with_the_stored_response() {
    let base = start().await;
    let resp = client().post(format!("{base}/v1/responses"))
        .json(&json!({"model": "smollm2", "input": "Name three colours.", "stream": true, "max_output_tokens": 16}))
        .send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let mut names = Vec::new();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let name = block.lines().find_map(|l| l.strip_prefix("event: "));
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(Some(data["type"].as_str().unwrap()), name, "{block}");
        names.push(name.unwrap().to_string());
        events.push(data);
    }
    assert_eq!(
        &names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    let end = names.len();
    assert_eq!(
        &names[end - 4..end - 1],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done"
        ]
    );
    assert!(["response.completed", "response.incomplete"].contains(&names[end - 1].as_str()));
    assert!(
        names[4..end - 4]
            .iter()
            .all(|n| n == "response.output_text.delta"),
        "{names:?}"
    );
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let last = &events[end - 1]["response"];
    assert_eq!(last["output"][0]["content"][0]["text"], deltas);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64);
    }
    let (s, stored) = get(&base, last["id"].as_str().unwrap()).await;
    assert_eq!((s, &stored), (StatusCode::OK, last));
}

#[tokio::test]
async fn tools_and_structured_output_work_as_on_chat() {
    let base = start().await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let (s, called) = post(
        &base,
        "/v1/responses",
        json!({"model": "smollm2", "input": "Weather in Oslo?",
        "tools": tools, "tool_choice": "required", "max_output_tokens": 60}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{called}");
    let call = called["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();
    assert_eq!(call["name"], "get_weather");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    let (s, answered) = post(&base, "/v1/responses", json!({"model": "smollm2", "previous_response_id": called["id"],
        "tools": tools, "max_output_tokens": 20,
        "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "5 degrees and rain"}]})).await;
    assert_eq!(s, StatusCode::OK, "{answered}");

    let schema = json!({"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green"]}},
                        "required": ["colour"], "additionalProperties": false});
    let (_, shaped) = post(&base, "/v1/responses", json!({"model": "smollm2", "input": "Pick a colour.",
        "text": {"format": {"type": "json_schema", "name": "pick", "schema": schema, "strict": true}}, "max_output_tokens": 40})).await;
    let out: Value =
        serde_json::from_str(shaped["output"][0]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert!(
        ["red", "green"].contains(&out["colour"].as_str().unwrap()),
        "{shaped}"
    );
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_4xx() {
    let base = start().await;
    let cases = [
        (
            json!({"input": "hi", "reasoning": {"effort": "high"}}),
            "unsupported_parameter",
        ),
        (
            json!({"input": "hi", "truncation": "auto"}),
            "unsupported_parameter",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            "unsupported_parameter",
        ),
        (
            json!({"input": [{"type": "function_call_output", "call_id": "nope", "output": "1"}]}),
            "invalid_value",
        ),
        (
            json!({"input": [{"role": "wizard", "content": "hi"}]}),
            "invalid_value",
        ),
        (
            json!({"input": "hi", "tools": [{"type": "web_search"}]}),
            "unsupported_parameter",
        ),
        (
            json!({"input": "hi", "tool_choice": "sometimes"}),
            "invalid_value",
        ),
        (
            json!({"input": "hi", "text": {"format": {"type": "yaml"}}}),
            "invalid_value",
        ),
        (json!({"input": "hi", "temperature": 5}), "invalid_value"),
        (
            json!({"input": "hi", "previous_response_id": "resp_nothing"}),
            "previous_response_not_found",
        ),
        (json!({"model": "gpt-5", "input": "hi"}), "model_not_found"),
        (json!({"input": 42}), "invalid_request"),
    ];
    for (body, code) in cases {
        let (s, b) = post(&base, "/v1/responses", body.clone()).await;
        let expected = if code == "model_not_found" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_openai_error(s, &b, expected, code);
    }
    let (s, _) = post(
        &base,
        "/v1/responses",
        json!({"input": "hi", "max_output_tokens": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_sees_only_its_own_responses() {
    let s = support::start(false).await;
    let now = auth::unix_now();
    let (_, alice) = s
        .authenticator
        .keys()
        .create(&support::new_key("alice"), now)
        .unwrap();
    let (_, bob) = s
        .authenticator
        .keys()
        .create(&support::new_key("bob"), now)
        .unwrap();
    let as_ = |key: &str| vec![("authorization".to_string(), format!("Bearer {key}"))];
    let call = |method: Method, path: String, body: Option<Value>, key: &str| {
        let headers = as_(key);
        let base = s.base.clone();
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            support::call(&base, &method, &path, body.as_ref(), &headers).await
        }
    };
    let (status, _, text) = call(
        Method::POST,
        "/v1/responses".into(),
        Some(json!({"input": "A private note.", "max_output_tokens": 3})),
        &alice,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/responses/{id}");
    assert_eq!(
        call(Method::GET, path.clone(), None, &alice).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(Method::GET, path.clone(), None, &bob).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(Method::DELETE, path.clone(), None, &bob).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _, _) = call(
        Method::POST,
        "/v1/responses".into(),
        Some(json!({"input": "Go on.", "previous_response_id": id, "max_output_tokens": 3})),
        &bob,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "bob cannot continue alice's conversation"
    );
    assert_eq!(
        call(Method::GET, path, None, &alice).await.0,
        StatusCode::OK,
        "still alice's"
    );
}
