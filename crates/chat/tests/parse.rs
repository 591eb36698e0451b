//! The tool-call parser on recorded replies in each format, whole and
//! streamed piece by piece, including malformed ones.

use chat::{ParsedPiece, ToolCallParser, ToolFormat};

fn text(s: &str) -> ParsedPiece {
    ParsedPiece::Text(s.into())
}

fn call(name: &str, arguments: &str) -> ParsedPiece {
    ParsedPiece::Call {
        name: name.into(),
        arguments: arguments.into(),
    }
}

/// Adjacent text pieces joined, so streamed and whole parses compare.
fn normalise(pieces: Vec<ParsedPiece>) -> Vec<ParsedPiece> {
    let mut out: Vec<ParsedPiece> = Vec::new();
    for piece in pieces {
        if let (Some(ParsedPiece::Text(prev)), ParsedPiece::Text(t)) = (out.last_mut(), &piece) {
            prev.push_str(t);
            continue;
        }
        out.push(piece);
    }
    out
}

fn parse_in_pieces(format: ToolFormat, reply: &str, piece_chars: usize) -> Vec<ParsedPiece> {
    let names = ["get_weather", "a", "b"].map(String::from).to_vec();
    let mut parser = ToolCallParser::new(format, names);
    let mut out = Vec::new();
    let chars: Vec<char> = reply.chars().collect();
    for chunk in chars.chunks(piece_chars) {
        out.extend(parser.push(&chunk.iter().collect::<String>()));
    }
    out.extend(parser.finish());
    normalise(out)
}

/// Parses whole and in pieces of 1, 2, 3 and 7 characters; all must agree.
fn parse(format: ToolFormat, reply: &str) -> Vec<ParsedPiece> {
    let whole = parse_in_pieces(format, reply, reply.len().max(1));
    for n in [1, 2, 3, 7] {
        assert_eq!(
            parse_in_pieces(format, reply, n),
            whole,
            "pieces of {n}: {reply:?}"
        );
    }
    whole
}

#[test]
fn hermes_single_call() {
    let reply = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
    assert_eq!(
        parse(ToolFormat::Hermes, reply),
        vec![call("get_weather", r#"{"city":"Oslo"}"#)]
    );
}

#[test]
fn hermes_text_then_two_calls() {
    let reply = "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>\n";
    assert_eq!(
        parse(ToolFormat::Hermes, reply),
        vec![
            text("Let me check."),
            call("a", "{}"),
            call("b", r#"{"x": 1}"#)
        ]
    );
}

#[test]
fn hermes_unclosed_but_complete_call_is_accepted() {
    let reply = "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"k\": [1, 2]}}\n";
    assert_eq!(
        parse(ToolFormat::Hermes, reply),
        vec![call("a", r#"{"k":[1,2]}"#)]
    );
}

#[test]
fn hermes_malformed_calls_come_back_as_text() {
    for reply in [
        "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"k\": }\n</tool_call>",
        "<tool_call>{\"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"a\", \"arguments\": 5}</tool_call>",
        // A tool that was not offered, and text arguments that are not JSON.
        "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"a\", \"arguments\": \"city=Oslo\"}</tool_call>",
        "<tool_call>\n{\"name\": \"a\", \"argu",
    ] {
        assert_eq!(
            parse(ToolFormat::Hermes, reply),
            vec![text(reply)],
            "{reply}"
        );
    }
}

#[test]
fn hermes_plain_text_passes_through_unchanged() {
    for reply in [
        "Hello there.",
        "a < b and <tool is not a call",
        "  spaced  \n",
        "x <tool_cal",
    ] {
        assert_eq!(
            parse(ToolFormat::Hermes, reply),
            vec![text(reply)],
            "{reply:?}"
        );
    }
}

#[test]
fn llama3_bare_json_calls() {
    let reply = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}";
    assert_eq!(
        parse(ToolFormat::Llama3, reply),
        vec![call("get_weather", r#"{"city":"Oslo"}"#)]
    );
    let two =
        "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"n\": 2}}";
    assert_eq!(
        parse(ToolFormat::Llama3, two),
        vec![call("a", "{}"), call("b", r#"{"n":2}"#)]
    );
}

#[test]
fn llama3_json_that_is_not_a_call_is_text() {
    for reply in [
        "{\"answer\": 42}",
        "{\"name\": \"a\", \"parameters\": {\"x\": tru",
        "{not json at all}",
        "The answer is {\"name\": \"a\"}",
    ] {
        assert_eq!(
            parse(ToolFormat::Llama3, reply),
            vec![text(reply)],
            "{reply}"
        );
    }
}

#[test]
fn mistral_array_and_args_forms() {
    let array = "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"q\": \"x\"}}, {\"name\": \"b\", \"arguments\": {}}]";
    assert_eq!(
        parse(ToolFormat::Mistral, array),
        vec![call("a", r#"{"q":"x"}"#), call("b", "{}")]
    );
    let args = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Oslo\"}";
    assert_eq!(
        parse(ToolFormat::Mistral, args),
        vec![call("get_weather", r#"{"city":"Oslo"}"#)]
    );
    let with_text = "Sure. [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}]";
    assert_eq!(
        parse(ToolFormat::Mistral, with_text),
        vec![text("Sure."), call("a", "{}")]
    );
}

#[test]
fn mistral_malformed_is_text() {
    for reply in [
        "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}",
        "[TOOL_CALLS][{\"x\": 1}]",
        "[TOOL_CALLS]get_weather[ARGS]nope",
    ] {
        assert_eq!(
            parse(ToolFormat::Mistral, reply),
            vec![text(reply)],
            "{reply}"
        );
    }
}

#[test]
fn generic_shapes() {
    let wrapped = "{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"n\": 1}}]}";
    assert_eq!(
        parse(ToolFormat::Generic, wrapped),
        vec![call("a", r#"{"n":1}"#)]
    );
    let single = "{\"tool_call\": {\"name\": \"a\", \"arguments\": {}}}";
    assert_eq!(parse(ToolFormat::Generic, single), vec![call("a", "{}")]);
    let openai = "{\"tool_calls\": [{\"function\": {\"name\": \"a\", \"arguments\": \"{}\"}}]}";
    assert_eq!(parse(ToolFormat::Generic, openai), vec![call("a", "{}")]);
    let response = "{\"response\": \"hello\"}";
    assert_eq!(parse(ToolFormat::Generic, response), vec![text(response)]);
}

#[test]
fn bare_json_with_a_name_but_no_arguments_is_an_answer() {
    for format in [ToolFormat::Llama3, ToolFormat::Generic] {
        let reply = "{\"name\": \"a\", \"age\": 30}";
        assert_eq!(parse(format, reply), vec![text(reply)]);
    }
}

#[test]
fn spaces_inside_text_after_a_call_survive_streaming() {
    let mut parser = ToolCallParser::new(ToolFormat::Hermes, vec!["a".into()]);
    let mut out = Vec::new();
    for piece in [
        "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>",
        "\n",
        "I",
        " have",
        " called",
        " it.",
    ] {
        out.extend(parser.push(piece));
    }
    out.extend(parser.finish());
    assert_eq!(
        normalise(out),
        vec![call("a", "{}"), text("I have called it.")]
    );
}

#[test]
fn text_after_a_call_is_kept_without_its_leading_whitespace() {
    let reply = "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n\nDone.";
    assert_eq!(
        parse(ToolFormat::Hermes, reply),
        vec![call("a", "{}"), text("Done.")]
    );
}
