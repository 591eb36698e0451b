//! What the log records: one variant per kind of event, flattened into the
//! line beside the chain fields.

use serde::{Deserialize, Serialize};

/// Something that happened and must be answerable for later.
// Events live for one trip through the writer's queue; boxing the request
// variant would cost an allocation per request to save a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// One API request, whatever its outcome.
    ApiRequest(ApiRequest),
    /// A credential that identified nobody.
    AuthFailure {
        reason: String,
        method: String,
        path: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        source_ip: Option<String>,
    },
    ModelPull {
        model: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        sha256: Option<String>,
    },
    ModelLoad {
        model: String,
        path: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        sha256: Option<String>,
    },
    ModelUnload {
        model: String,
    },
    ModelDelete {
        model: String,
    },
    /// `hearth verify` found a stored model's bytes differ from its
    /// manifest: the offsets of the bad chunks (none when only the whole
    /// file could be compared).
    ModelVerifyFailed {
        model: String,
        bad_chunk_offsets: Vec<u64>,
    },
    /// `hearth repair` fetched these chunks of a stored model again.
    ModelRepair {
        model: String,
        chunk_offsets: Vec<u64>,
        bytes: u64,
        source: String,
    },
    /// A served model moved to another version of its files: new requests
    /// go to `to`, requests already running finish on `from`.
    ModelSwap {
        model: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        from_sha256: Option<String>,
        to_sha256: String,
    },
    /// Another node read part of a stored model's file from this one
    /// (`hearth serve --share`): who, which file and which bytes.
    PeerTransfer {
        model: String,
        sha256: String,
        offset: u64,
        length: u64,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        principal: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        source_ip: Option<String>,
    },
    /// `hearth push` uploaded a stored model to object storage.
    ModelPush {
        model: String,
        /// The manifest's location, `s3://bucket/prefix/models/NAME.json`.
        destination: String,
        bytes_uploaded: u64,
        /// Chunks decrypted from an encrypted store on their way up: the
        /// weights left this node's encryption.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        decrypted: bool,
    },
    /// `hearth push` failed after some chunks went up: what left this
    /// node, and why the push stopped (no manifest was written).
    ModelPushFailed {
        model: String,
        destination: String,
        chunks_uploaded: usize,
        bytes_uploaded: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        decrypted: bool,
        reason: String,
    },
    KeyCreated {
        key_id: String,
        name: String,
        roles: Vec<String>,
    },
    KeyRevoked {
        key_id: String,
    },
    /// A policy set was loaded (at start or on reload).
    PolicyLoaded {
        files: Vec<String>,
        policies: usize,
        /// SHA-256 over the files' names and contents.
        sha256: String,
    },
    /// The writer started; `version` is Hearth's.
    LogOpened {
        version: String,
    },
    /// A torn last line (a crash mid-write) was cut off at start.
    LogRecovered {
        file: String,
        dropped_bytes: u64,
    },
    /// The chain's head, signed. Written by the log itself.
    Checkpoint {
        /// Sequence number of the last entry it covers.
        covers: u64,
        key_id: String,
        /// Hex ed25519 signature over the checkpoint message (`covers`, `prev`).
        signature: String,
    },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ApiRequest(_) => "api_request",
            Event::AuthFailure { .. } => "auth_failure",
            Event::ModelPull { .. } => "model_pull",
            Event::ModelLoad { .. } => "model_load",
            Event::ModelUnload { .. } => "model_unload",
            Event::ModelDelete { .. } => "model_delete",
            Event::ModelVerifyFailed { .. } => "model_verify_failed",
            Event::ModelRepair { .. } => "model_repair",
            Event::ModelPush { .. } => "model_push",
            Event::ModelPushFailed { .. } => "model_push_failed",
            Event::PeerTransfer { .. } => "peer_transfer",
            Event::ModelSwap { .. } => "model_swap",
            Event::KeyCreated { .. } => "key_created",
            Event::KeyRevoked { .. } => "key_revoked",
            Event::PolicyLoaded { .. } => "policy_loaded",
            Event::LogOpened { .. } => "log_opened",
            Event::LogRecovered { .. } => "log_recovered",
            Event::Checkpoint { .. } => "checkpoint",
        }
    }
}

/// What one API request did, filled in as the request goes along.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiRequest {
    pub request_id: String,
    /// `key:<id>`, `user:<sub>`, or `anonymous` on an open server.
    pub principal: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub issuer: Option<String>,
    pub action: String,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub model: Option<String>,
    /// `allow` or `deny`.
    pub decision: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_ip: Option<String>,
    /// The verified client certificate's subject, over mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls_client: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// SHA-256 of the request body.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prompt_sha256: Option<String>,
    /// SHA-256 of the generated text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub response_sha256: Option<String>,
    /// The texts themselves, only when configured.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub response: Option<String>,
}
