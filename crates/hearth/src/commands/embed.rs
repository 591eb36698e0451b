//! `hearth embed`: texts to vectors on the command line, one JSON array per line.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use types::{EmbedInput, EmbeddingRequest, TextGenerator};

use super::load;
use crate::cli::EmbedArgs;
use crate::config::Config;

pub fn embed(config: &Config, args: &EmbedArgs) -> Result<()> {
    let mut texts = Vec::new();
    for text in &args.texts {
        if text == "-" {
            for line in std::io::stdin().lock().lines() {
                texts.push(line.context("cannot read texts from stdin")?);
            }
        } else {
            texts.push(text.clone());
        }
    }
    let reference = args.model.as_deref().unwrap_or(store::DEFAULT_MODEL);
    let (_, engine) = load(config, reference)?;
    let request = EmbeddingRequest {
        truncate: args.truncate,
        dimensions: args.dimensions,
        ..EmbeddingRequest::new(texts.into_iter().map(EmbedInput::Text).collect())
    };
    let out = engine.embed(request)?.blocking_wait()?;
    let mut stdout = std::io::stdout().lock();
    for vector in out.vectors {
        serde_json::to_writer(&mut stdout, &vector)?;
        writeln!(stdout)?;
    }
    Ok(())
}
