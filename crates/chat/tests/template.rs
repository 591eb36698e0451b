//! Chat templates rendered through minijinja: real templates from model
//! files (SmolLM2's), and small ones in the styles of tool-aware (Hermes/Qwen)
//! and strictly alternating (Gemma) templates.

use chat::{ChatTemplate, TemplateError, ToolFormat};
use serde_json::json;
use types::{ChatMessage, Role, Tool, ToolCall};

fn template(name: &str) -> ChatTemplate {
    let path = format!(
        "{}/tests/templates/{name}.jinja",
        env!("CARGO_MANIFEST_DIR")
    );
    let source = std::fs::read_to_string(&path).unwrap();
    ChatTemplate::new(&source, "<bos>", "<eos>").unwrap()
}

fn weather() -> Tool {
    Tool {
        name: "get_weather".into(),
        description: Some("Current weather in a city".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

fn call() -> ToolCall {
    ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Oslo"}"#.into(),
    }
}

fn tool_round_trip() -> Vec<ChatMessage> {
    let mut assistant = ChatMessage::new(Role::Assistant, "");
    assistant.tool_calls = vec![call()];
    let mut result = ChatMessage::new(Role::Tool, r#"{"temp": 3}"#);
    result.tool_call_id = Some("call_1".into());
    vec![
        ChatMessage::new(Role::User, "Weather in Oslo?"),
        assistant,
        result,
    ]
}

#[test]
fn smollm2_renders_exactly_as_its_template_says() {
    let t = template("smollm2");
    let out = t
        .render(&[ChatMessage::new(Role::User, "Hi")], &[], true)
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = t
        .render(
            &[
                ChatMessage::new(Role::System, "Be brief."),
                ChatMessage::new(Role::User, "Hi"),
            ],
            &[],
            false,
        )
        .unwrap();
    assert_eq!(
        with_system,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn a_template_without_tools_gets_them_in_the_system_prompt() {
    let t = template("smollm2");
    assert!(!t.renders_tools());
    assert_eq!(t.tool_format(), ToolFormat::Hermes);
    let out = t
        .render(
            &[ChatMessage::new(Role::User, "Weather in Oslo?")],
            &[weather()],
            true,
        )
        .unwrap();
    assert!(
        out.starts_with("<|im_start|>system\nYou may call one or more functions"),
        "{out}"
    );
    assert!(out.contains(r#""name":"get_weather""#), "{out}");
    assert!(out.ends_with("<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n"));

    // An existing system prompt keeps its text and gains the tools.
    let out = t
        .render(
            &[
                ChatMessage::new(Role::System, "Be brief."),
                ChatMessage::new(Role::User, "Hi"),
            ],
            &[weather()],
            true,
        )
        .unwrap();
    assert!(
        out.starts_with("<|im_start|>system\nBe brief.\n\nYou may call"),
        "{out}"
    );
}

#[test]
fn calls_and_results_go_back_in_hermes_form_when_the_template_has_none() {
    let t = template("smollm2");
    let out = t.render(&tool_round_trip(), &[weather()], true).unwrap();
    assert!(
        out.contains("<|im_start|>assistant\n<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call><|im_end|>"),
        "{out}"
    );
    assert!(
        out.contains(
            "<|im_start|>user\n<tool_response>\n{\"temp\": 3}\n</tool_response><|im_end|>"
        ),
        "{out}"
    );
}

#[test]
fn a_tool_aware_template_renders_tools_and_calls_itself() {
    let t = template("hermes-tools");
    assert!(t.renders_tools());
    assert_eq!(t.tool_format(), ToolFormat::Hermes);
    let out = t.render(&tool_round_trip(), &[weather()], true).unwrap();
    // Tools as the template writes them: Python's json.dumps spacing, keys in order.
    assert!(
        out.contains(r#"{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": {"type": "object""#),
        "{out}"
    );
    assert!(!out.contains("You may call one or more functions"));
    assert!(
        out.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"),
        "{out}"
    );
    assert!(
        out.contains("<tool_response>\n{\"temp\": 3}\n</tool_response>"),
        "{out}"
    );
}

#[test]
fn a_template_that_refuses_the_conversation_says_why() {
    let t = template("alternating");
    let ok = t
        .render(
            &[
                ChatMessage::new(Role::System, "S"),
                ChatMessage::new(Role::User, "Hi"),
            ],
            &[],
            true,
        )
        .unwrap();
    assert_eq!(
        ok,
        "<bos><start_of_turn>user\nS\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    let err = t
        .render(
            &[
                ChatMessage::new(Role::User, "a"),
                ChatMessage::new(Role::User, "b"),
            ],
            &[],
            true,
        )
        .unwrap_err();
    assert_eq!(
        err,
        TemplateError::Refused(
            "Conversation roles must alternate user/assistant/user/assistant/...".into()
        )
    );
}

#[test]
fn several_tool_results_in_a_row_become_one_user_turn() {
    let t = template("alternating");
    let mut messages = tool_round_trip();
    messages[1].tool_calls.push(ToolCall {
        id: "call_2".into(),
        ..call()
    });
    let mut second = ChatMessage::new(Role::Tool, r#"{"temp": 4}"#);
    second.tool_call_id = Some("call_2".into());
    messages.push(second);
    let out = t.render(&messages, &[weather()], true).unwrap();
    assert!(
        out.contains("<tool_response>\n{\"temp\": 3}\n</tool_response>\n<tool_response>\n{\"temp\": 4}\n</tool_response><end_of_turn>"),
        "{out}"
    );
}

#[test]
fn bad_templates_are_errors_not_panics() {
    assert!(matches!(
        ChatTemplate::new("{% for m in messages %}", "", ""),
        Err(TemplateError::Syntax(_))
    ));
    // A template that never ends runs out of fuel.
    let looping = ChatTemplate::new(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "",
        "",
    )
    .unwrap();
    assert!(matches!(
        looping.render(&[ChatMessage::new(Role::User, "a")], &[], true),
        Err(TemplateError::Render(_))
    ));
}

#[test]
fn python_string_methods_and_strftime_work() {
    let t = ChatTemplate::new(
        "{{ messages[0].content.strip().upper() }}|{{ strftime_now('%Y') | length }}|{{ bos_token }}",
        "<s>",
        "</s>",
    )
    .unwrap();
    let out = t
        .render(&[ChatMessage::new(Role::User, "  hi ")], &[], false)
        .unwrap();
    assert_eq!(out, "HI|4|<s>");
}

#[test]
fn chatml_fallback_renders_like_llama_cpp() {
    let t = ChatTemplate::new(chat::CHATML, "", "").unwrap();
    let out = t
        .render(
            &[
                ChatMessage::new(Role::System, "S"),
                ChatMessage::new(Role::User, "Hi"),
            ],
            &[],
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}
