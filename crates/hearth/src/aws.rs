//! Where `s3://` credentials and settings come from, as AWS's own tools
//! read them: the standard variables first (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`), then the profile (`AWS_PROFILE`, else `default`) in
//! the shared files (`~/.aws/credentials` and `~/.aws/config`, or
//! `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE`), then `[s3]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

/// The options `bucket` gets, with `endpoint` and `region` from `[s3]`
/// as the last resort.
pub fn s3_options(endpoint: Option<String>, region: Option<String>) -> Result<bucket::S3Options> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let home = var("HOME").map(PathBuf::from);
    let shared = |variable: &str, file: &str| {
        var(variable)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(file)))
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    };
    let credentials = section(
        &shared("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        &profile,
    );
    // `~/.aws/config` names profiles `[profile NAME]`, except `[default]`.
    let config_section = if profile == "default" {
        profile.clone()
    } else {
        format!("profile {profile}")
    };
    let config = section(&shared("AWS_CONFIG_FILE", "config"), &config_section);
    let endpoint = var("AWS_ENDPOINT_URL")
        .or_else(|| config.get("endpoint_url").cloned())
        .or(endpoint);
    if let Some(e) = &endpoint {
        if !(e.starts_with("https://") || e.starts_with("http://")) {
            bail!("the object storage endpoint `{e}` is not an http(s) URL");
        }
    }
    // Keys come as a pair, from one place: never an ID from the
    // environment with a secret from a file.
    let (access_key_id, secret_access_key, session_token) =
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => (Some(id), Some(secret), var("AWS_SESSION_TOKEN")),
            _ => (
                credentials.get("aws_access_key_id").cloned(),
                credentials.get("aws_secret_access_key").cloned(),
                credentials.get("aws_session_token").cloned(),
            ),
        };
    Ok(bucket::S3Options {
        endpoint,
        region: var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| config.get("region").cloned())
            .or(region),
        access_key_id,
        secret_access_key,
        session_token,
    })
}

/// The `key = value` lines of `[name]` in an AWS shared file. By hand: the
/// files use a small subset of INI (sections, `key = value`, `#` and `;`
/// comments), and no INI crate reads it more faithfully.
fn section(text: &str, name: &str) -> BTreeMap<String, String> {
    let mut inside = false;
    let mut values = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = header.trim() == name;
            continue;
        }
        if inside {
            if let Some((key, value)) = line.split_once('=') {
                values.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_section_is_read_and_others_are_not() {
        let text = "\
# site credentials
[default]
aws_access_key_id = AKIDEFAULT
aws_secret_access_key = secret-default

[profile models]
region = eu-central-1
endpoint_url = http://minio.internal:9000
; a comment
[models]
aws_access_key_id=AKIMODELS
aws_secret_access_key = secret=with=equals
";
        let d = section(text, "default");
        assert_eq!(d["aws_access_key_id"], "AKIDEFAULT");
        assert_eq!(d.len(), 2);
        let m = section(text, "models");
        assert_eq!(m["aws_access_key_id"], "AKIMODELS");
        assert_eq!(m["aws_secret_access_key"], "secret=with=equals");
        let c = section(text, "profile models");
        assert_eq!(c["endpoint_url"], "http://minio.internal:9000");
        assert!(section(text, "absent").is_empty());
    }
}
