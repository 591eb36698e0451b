//! `run` and `chat`: generation in the terminal, streamed as it happens.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use engine::Engine;
use serde_json::json;
use types::{
    ChatMessage, GenerateError, GenerationEvent, GenerationOutput, GenerationRequest, Prompt, Role,
    TextGenerator,
};

use super::{load, sampling};
use crate::cli::{ChatArgs, RunArgs, SamplingArgs};
use crate::config::Config;

fn request(prompt: Prompt, args: &SamplingArgs, config: &Config) -> GenerationRequest {
    GenerationRequest {
        sampling: sampling(args, config.seed),
        stop: args.stop.clone(),
        max_tokens: args.max_tokens,
        ..GenerationRequest::new(prompt)
    }
}

pub fn run(config: &Config, args: &RunArgs) -> Result<()> {
    let (reference, prompt) = match args.words.as_slice() {
        [prompt] => (store::DEFAULT_MODEL, prompt.clone()),
        [model, prompt] => (model.as_str(), prompt.clone()),
        _ => unreachable!("clap allows one or two words"),
    };
    let prompt = if prompt == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the prompt from stdin")?;
        text
    } else {
        prompt
    };
    let (model, engine) = load(config, reference)?;
    let prompt = if args.raw {
        Prompt::Text(prompt)
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new(Role::System, system.clone()));
        }
        messages.push(ChatMessage::new(Role::User, prompt));
        Prompt::Chat(messages)
    };
    let mut req = request(prompt, &args.sampling, config);
    req.ignore_eos = args.ignore_eos;

    if args.json {
        let out = engine.submit(req)?.blocking_collect()?;
        let value = json!({
            "model": model.name,
            "text": out.text,
            "finish_reason": out.finish_reason,
            "usage": out.usage,
            "timings": out.timings,
        });
        println!("{value}");
        return Ok(());
    }
    let out = stream_to_stdout(&engine, req)?;
    if out.is_some() {
        println!();
    }
    Ok(())
}

/// Streams a generation to stdout. `None` means stdout was closed (e.g. piped
/// into `head`), which cancels the generation quietly.
fn stream_to_stdout(
    engine: &Engine,
    req: GenerationRequest,
) -> Result<Option<GenerationOutput>, GenerateError> {
    let mut generation = engine.submit(req)?;
    let mut stdout = std::io::stdout().lock();
    let mut text = String::new();
    while let Some(event) = generation.blocking_next() {
        match event {
            GenerationEvent::Text(piece) => {
                if stdout
                    .write_all(piece.as_bytes())
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return Ok(None);
                }
                text.push_str(&piece);
            }
            // The command line offers no tools and asks for no logprobs.
            GenerationEvent::ToolCall(_) | GenerationEvent::Logprob(_) => {}
            GenerationEvent::Done(done) => {
                return Ok(Some(GenerationOutput {
                    text,
                    tool_calls: Vec::new(),
                    finish_reason: done.finish_reason,
                    stop_index: done.stop_index,
                    logprobs: Vec::new(),
                    usage: done.usage,
                    timings: done.timings,
                }))
            }
            GenerationEvent::Failed(err) => return Err(err),
        }
    }
    Err(GenerateError::Unavailable)
}

const CHAT_HELP: &str = "Commands: /reset clears the conversation, /bye (or Ctrl-D) leaves.";

pub fn chat(config: &Config, args: &ChatArgs) -> Result<()> {
    let reference = args.model.as_deref().unwrap_or(store::DEFAULT_MODEL);
    let (model, engine) = load(config, reference)?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "Chatting with {} ({} tokens of context). {CHAT_HELP}",
            model.name,
            engine.info().ctx_size
        );
    }
    let system: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage::new(Role::System, s.clone()))
        .collect();
    let mut history: Vec<ChatMessage> = Vec::new();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            print!(">>> ");
            std::io::stdout().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read from stdin")?;
        let input = line.trim();
        match input {
            "" => continue,
            "/bye" | "/exit" | "/quit" => break,
            "/reset" => {
                history.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            "/help" | "/?" => {
                eprintln!("{CHAT_HELP}");
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new(Role::User, input));
        let reply = loop {
            let messages = system.iter().chain(history.iter()).cloned().collect();
            match stream_to_stdout(
                &engine,
                request(Prompt::Chat(messages), &args.sampling, config),
            ) {
                // Forget the oldest exchange and try again, as long as one remains.
                Err(GenerateError::ContextOverflow { .. }) if history.len() > 1 => {
                    history.drain(..history.len().min(2));
                }
                other => break other,
            }
        };
        match reply {
            Ok(Some(out)) => {
                println!();
                if args.verbose {
                    eprintln!(
                        "[{} prompt tokens, {} generated, {:.1} tokens/s]",
                        out.usage.prompt_tokens,
                        out.usage.completion_tokens,
                        out.timings.decode_tokens_per_second
                    );
                }
                history.push(ChatMessage::new(Role::Assistant, out.text));
            }
            Ok(None) => return Ok(()),
            Err(err @ GenerateError::ContextOverflow { .. }) => {
                history.pop();
                eprintln!("error: {err}");
            }
            Err(err) => bail!(err),
        }
    }
    Ok(())
}
