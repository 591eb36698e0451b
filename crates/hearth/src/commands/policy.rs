//! `policy check`: what the policies in `$HEARTH_HOME/policies` decide for
//! one principal, action, resource and context, and which policies decided.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use auth::{Action, Principal, RequestContext, Resource};
use serde::Deserialize;

use super::keys::{open_key_store, parse_attrs};
use super::serve::load_policies;
use crate::cli::PolicyCommand;
use crate::config::Config;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ContextArg {
    time: Option<u64>,
    source_ip: Option<std::net::IpAddr>,
    tls_client: Option<String>,
}

pub fn policy(config: &Config, command: PolicyCommand) -> Result<()> {
    let PolicyCommand::Check {
        principal,
        roles,
        attrs,
        action,
        resource,
        resource_attrs,
        context,
        json,
    } = command;
    let policies = load_policies(config)?;
    let Some(action) = Action::parse(&action) else {
        let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        bail!("--action `{action}` is not one of {}", known.join(", "));
    };
    let principal = match open_key_store(config)?.find(&principal)? {
        Some(key) if roles.is_empty() && attrs.is_empty() => key.principal(),
        Some(_) => bail!("--role and --attr describe an ad-hoc principal, not a stored key"),
        None => Principal {
            id: format!("key:{principal}"),
            name: principal,
            issuer: None,
            roles: roles.into_iter().collect(),
            attrs: parse_attrs(&attrs)?,
            priority: None,
            limits: auth::Limits::default(),
        },
    };
    let resource = match resource.split_once(':') {
        // Without --resource-attr, the model's attributes from the
        // configuration: what the server would decide on.
        Some(("model", name)) if !name.is_empty() => Resource::Model {
            name: name.to_string(),
            attrs: if resource_attrs.is_empty() {
                config.model_attrs.get(name).cloned().unwrap_or_default()
            } else {
                parse_attrs(&resource_attrs)?
            },
        },
        None if resource == "server" => Resource::Server,
        _ => bail!("--resource `{resource}` must be `model:NAME` or `server`"),
    };
    let ctx: ContextArg = match &context {
        Some(text) => serde_json::from_str(text)
            .context("--context is not valid JSON of time, source_ip, tls_client")?,
        None => ContextArg::default(),
    };
    let context = RequestContext {
        time: ctx.time.unwrap_or_else(auth::unix_now),
        source_ip: ctx.source_ip,
        tls_client: ctx.tls_client,
    };
    let decision = policies.decide(&principal, action, &resource, &context)?;
    if json {
        let out: BTreeMap<&str, serde_json::Value> = BTreeMap::from([
            (
                "decision",
                (if decision.allowed { "allow" } else { "deny" }).into(),
            ),
            ("policies", decision.reasons.clone().into()),
            ("errors", decision.errors.clone().into()),
        ]);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let word = if decision.allowed { "ALLOW" } else { "DENY" };
        if decision.reasons.is_empty() {
            println!("{word} (no policy permits this)");
        } else {
            println!("{word} by {}", decision.reasons.join(", "));
        }
        for e in &decision.errors {
            println!("  policy error: {e}");
        }
    }
    Ok(())
}
