//! Constrained replies on the real default model: JSON schemas and forced
//! tool calls come out well-formed whatever the seed; bad schemas are
//! refused before the request queues.

use engine::{Engine, EngineConfig};
use serde_json::{json, Value};
use types::{
    ChatMessage, FinishReason, GenerateError, GenerationRequest, OutputFormat, Prompt, Role,
    TextGenerator, Tool, ToolChoice,
};

fn engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = EngineConfig {
            threads: 2,
            ..EngineConfig::default()
        };
        Engine::load(&testkit::default_model(), &config).expect("load default model")
    })
}

fn chat(text: &str, seed: u32) -> GenerationRequest {
    let mut r = GenerationRequest::new(Prompt::Chat(vec![ChatMessage::new(Role::User, text)]));
    r.sampling.seed = Some(seed);
    r.sampling.temperature = 1.0;
    r.max_tokens = Some(120);
    r
}

fn weather() -> Tool {
    Tool {
        name: "get_weather".into(),
        description: Some("Current weather in a city".into()),
        parameters: json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "unit": {"enum": ["celsius", "fahrenheit"]}
            },
            "required": ["city", "unit"]
        }),
    }
}

fn clock() -> Tool {
    Tool {
        name: "get_time".into(),
        description: None,
        parameters: json!({"type": "object", "properties": {"zone": {"type": "string", "maxLength": 24}}, "required": ["zone"]}),
    }
}

#[test]
fn json_schema_replies_parse_and_hold_the_schema_for_every_seed() {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 3}
        },
        "required": ["name", "age", "pets"],
        "additionalProperties": false
    });
    for seed in 0..6 {
        let mut r = chat("Describe a person.", seed);
        r.format = OutputFormat::Json(schema.clone());
        let out = engine().submit(r).unwrap().blocking_collect().unwrap();
        assert_eq!(
            out.finish_reason,
            FinishReason::Stop,
            "seed {seed}: {}",
            out.text
        );
        let v: Value = serde_json::from_str(&out.text)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}: {}", out.text));
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 3, "{v}");
        assert!(obj["name"].as_str().unwrap().chars().count() <= 20);
        assert!((0..=120).contains(&obj["age"].as_i64().unwrap()), "{v}");
        for pet in obj["pets"].as_array().unwrap() {
            assert!(pet == "cat" || pet == "dog", "{v}");
        }
    }
}

#[test]
fn a_required_tool_call_comes_back_as_a_call() {
    for seed in 0..4 {
        let mut r = chat("What is the weather in Paris?", seed);
        r.tools = vec![weather(), clock()];
        r.tool_choice = ToolChoice::Required;
        r.parallel_tool_calls = false;
        let out = engine().submit(r).unwrap().blocking_collect().unwrap();
        assert_eq!(
            out.finish_reason,
            FinishReason::ToolCalls,
            "seed {seed}: {out:?}"
        );
        assert_eq!(out.tool_calls.len(), 1, "{out:?}");
        assert!(out.text.is_empty(), "{out:?}");
        let call = &out.tool_calls[0];
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        match call.name.as_str() {
            "get_weather" => {
                assert!(args["city"].is_string(), "{args}");
                assert!(
                    args["unit"] == "celsius" || args["unit"] == "fahrenheit",
                    "{args}"
                );
                assert_eq!(
                    args.as_object().unwrap().len(),
                    2,
                    "only declared keys: {args}"
                );
            }
            "get_time" => assert!(args["zone"].is_string(), "{args}"),
            other => panic!("unknown tool {other}"),
        }
        assert!(call.id.starts_with("call_"));
    }
}

#[test]
fn a_named_tool_is_the_one_called() {
    let mut r = chat("What is the weather in Paris?", 7);
    r.tools = vec![weather(), clock()];
    r.tool_choice = ToolChoice::Function("get_time".into());
    r.parallel_tool_calls = false;
    let out = engine().submit(r).unwrap().blocking_collect().unwrap();
    assert_eq!(out.tool_calls.len(), 1, "{out:?}");
    assert_eq!(out.tool_calls[0].name, "get_time");
}

#[test]
fn bad_constraints_are_refused_naming_the_field() {
    let refuse = |r: GenerationRequest| match engine().submit(r) {
        Err(GenerateError::InvalidConstraint { field, message }) => (field, message),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    };
    let mut r = chat("x", 0);
    r.format = OutputFormat::Json(
        json!({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}),
    );
    let (field, message) = refuse(r);
    assert_eq!(field, "response_format");
    assert!(message.contains("if"), "{message}");

    let mut r = chat("x", 0);
    r.format = OutputFormat::Json(json!({"type": "string", "minLength": 5, "maxLength": 2}));
    assert_eq!(refuse(r).0, "response_format");

    let mut r = chat("x", 0);
    r.tools = vec![weather()];
    r.tool_choice = ToolChoice::Function("nope".into());
    assert_eq!(refuse(r).0, "tool_choice");

    let mut r = chat("x", 0);
    let mut broken = weather();
    broken.parameters = json!({"type": "object", "properties": {"city": {"type": "strin"}}});
    r.tools = vec![broken];
    let (field, message) = refuse(r);
    assert_eq!(field, "tools");
    assert!(message.contains("get_weather"), "{message}");

    let mut r = chat("x", 0);
    r.tools = vec![weather()];
    r.tool_choice = ToolChoice::Required;
    r.format = OutputFormat::Json(json!({"type": "object"}));
    assert_eq!(refuse(r).0, "response_format");

    let mut r = GenerationRequest::new(Prompt::Text("x".into()));
    r.tools = vec![weather()];
    assert_eq!(refuse(r).0, "tools");
}

#[test]
fn unenforceable_tool_keywords_are_refused_only_when_a_call_is_forced() {
    let mut tool = weather();
    tool.parameters["if"] = json!({"required": ["city"]});
    tool.parameters["then"] = json!({"required": ["unit"]});
    let mut r = chat("Weather in Oslo?", 0);
    r.max_tokens = Some(4);
    r.tools = vec![tool.clone()];
    engine().submit(r).unwrap().blocking_collect().unwrap();
    let mut r = chat("Weather in Oslo?", 0);
    r.tools = vec![tool];
    r.tool_choice = ToolChoice::Required;
    match engine().submit(r) {
        Err(GenerateError::InvalidConstraint {
            field: "tools",
            message,
        }) => {
            assert!(
                message.contains("get_weather") && message.contains("if"),
                "{message}"
            )
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_tool_round_trip_renders_and_answers() {
    let mut assistant = ChatMessage::new(Role::Assistant, "");
    assistant.tool_calls = vec![types::ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris", "unit": "celsius"}"#.into(),
    }];
    let mut result = ChatMessage::new(Role::Tool, r#"{"temperature": 21, "sky": "clear"}"#);
    result.tool_call_id = Some("call_1".into());
    let mut r = GenerationRequest::new(Prompt::Chat(vec![
        ChatMessage::new(Role::User, "What is the weather in Paris?"),
        assistant,
        result,
    ]));
    r.sampling = types::SamplingParams::greedy();
    r.max_tokens = Some(40);
    r.tools = vec![weather()];
    r.tool_choice = ToolChoice::None;
    let out = engine().submit(r).unwrap().blocking_collect().unwrap();
    assert!(out.tool_calls.is_empty());
    assert!(!out.text.trim().is_empty());
}
