//! Authorization with Cedar: who may do which action on which model.
//!
//! Policies live in `*.cedar` files and are validated against the schema
//! shipped beside this module (`hearth.cedarschema`) before they are used;
//! an invalid file is refused with Cedar's diagnostic and its name.
//! Principals become `Hearth::Key` or `Hearth::User` entities in their
//! roles (`Hearth::Role`), with their attributes as tags; models become
//! `Hearth::Model` entities with the attributes the configuration gives
//! them. Cedar denies by default, and a `forbid` wins over any `permit`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::principal::Principal;

/// The schema every policy is validated against.
pub const SCHEMA: &str = include_str!("hearth.cedarschema");

/// What Hearth installs in an empty policy directory: users may use models,
/// admins may do anything. Edit or replace it.
pub const DEFAULT_POLICIES: &str = include_str!("default.cedar");

/// The seed's example: radiologists may use `medical_qa` only from the
/// radiology department, with board certification.
pub const EXAMPLE_POLICIES: &str = include_str!("radiology.cedar.example");

/// Everything a principal may ask to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Predict,
    Embed,
    ListModels,
    Pull,
    DeleteModel,
    ManageKeys,
    ReadAudit,
    Admin,
    /// Copy a model's manifest and files to another node (peer pulls).
    Replicate,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Predict,
        Action::Embed,
        Action::ListModels,
        Action::Pull,
        Action::DeleteModel,
        Action::ManageKeys,
        Action::ReadAudit,
        Action::Admin,
        Action::Replicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Predict => "predict",
            Action::Embed => "embed",
            Action::ListModels => "list_models",
            Action::Pull => "pull",
            Action::DeleteModel => "delete_model",
            Action::ManageKeys => "manage_keys",
            Action::ReadAudit => "read_audit",
            Action::Admin => "admin",
            Action::Replicate => "replicate",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// Whether the action is on a model (else on the server as a whole).
    pub fn on_model(self) -> bool {
        matches!(
            self,
            Action::Predict
                | Action::Embed
                | Action::Pull
                | Action::DeleteModel
                | Action::Replicate
        )
    }
}

/// What an action is done to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A model by name, with its configured attributes (department,
    /// sensitivity...).
    Model {
        name: String,
        attrs: BTreeMap<String, String>,
    },
    /// The server itself (listing models, keys, audit, administration).
    Server,
}

/// Facts about the request itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// Unix seconds.
    pub time: u64,
    pub source_ip: Option<IpAddr>,
    /// The client certificate's subject on mTLS connections.
    pub tls_client: Option<String>,
}

/// A decision and the policies that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    pub allowed: bool,
    /// Ids of the policies that decided: the permits that allowed, or the
    /// forbids that denied. Empty for a default deny.
    pub reasons: Vec<String>,
    /// Policies that could not be evaluated for this request (they count as
    /// not applying).
    pub errors: Vec<String>,
}

/// A policy file or the set as a whole was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policies in {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid policy in {path}: {diagnostic}")]
    Parse { path: PathBuf, diagnostic: String },
    #[error("policies do not match Hearth's schema:\n{diagnostic}")]
    Invalid { diagnostic: String },
    #[error("invalid request for the policies: {0}")]
    Request(String),
}

/// A validated policy set, ready to decide.
pub struct Policies {
    set: PolicySet,
    schema: Schema,
    /// The schema's action entities, needed for `action in [...]`.
    actions: Entities,
    /// Which files the set came from, for messages.
    files: Vec<PathBuf>,
    /// SHA-256 over the sources' names and texts: which set decided.
    digest: String,
}

/// The policies in force, replaced whole while requests are being decided
/// (on SIGHUP): a decision uses the set current when it started, and no
/// request ever sees a half-loaded set.
pub struct LivePolicies {
    current: std::sync::RwLock<std::sync::Arc<Policies>>,
}

impl LivePolicies {
    pub fn new(policies: Policies) -> LivePolicies {
        LivePolicies {
            current: std::sync::RwLock::new(std::sync::Arc::new(policies)),
        }
    }

    /// The set in force now.
    pub fn current(&self) -> std::sync::Arc<Policies> {
        // A read lock held for one Arc clone: readers never wait on
        // each other, and a reload waits for a few nanoseconds at most.
        std::sync::Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `policies` in force from the next decision on.
    pub fn replace(&self, policies: Policies) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(policies);
    }
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("files", &self.files)
            .field("policies", &self.set.policies().count())
            .finish()
    }
}

fn schema() -> Schema {
    let (schema, _) = Schema::from_cedarschema_str(SCHEMA).expect("the shipped schema parses");
    schema
}

fn diagnostic(err: &dyn miette::Diagnostic) -> String {
    let mut text = err.to_string();
    if let Some(help) = err.help() {
        text.push_str(&format!(" (help: {help})"));
    }
    if let Some(related) = err.related() {
        for r in related {
            text.push_str(&format!("\n  {}", diagnostic(r)));
        }
    }
    text
}

impl Policies {
    /// Every `*.cedar` file in `dir`, in name order. A missing directory is
    /// an empty set (which denies everything).
    pub fn load_dir(dir: &Path) -> Result<Policies, PolicyError> {
        let io = |source| PolicyError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry.map_err(io)?.path();
                    if path.extension().is_some_and(|e| e == "cedar") {
                        files.push(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        files.sort();
        let mut sources = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Io {
                path: path.clone(),
                source,
            })?;
            sources.push((path, text));
        }
        Policies::from_sources(sources)
    }

    /// Policies from `(origin, text)` pairs. Each policy's id is its `@id`
    /// annotation, or `<file name>:<index>`.
    pub fn from_sources(sources: Vec<(PathBuf, String)>) -> Result<Policies, PolicyError> {
        let mut set = PolicySet::new();
        let mut files = Vec::new();
        let mut digest = sha2::Sha256::new();
        for (path, text) in sources {
            use sha2::Digest as _;
            digest.update(path.file_name().unwrap_or_default().as_encoded_bytes());
            digest.update([0]);
            digest.update(text.as_bytes());
            digest.update([0]);
            let parsed = PolicySet::from_str(&text).map_err(|e| PolicyError::Parse {
                path: path.clone(),
                diagnostic: diagnostic(&e),
            })?;
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().to_string(),
            );
            for (i, policy) in parsed.policies().enumerate() {
                let id = policy
                    .annotation("id")
                    .map_or_else(|| format!("{name}:{i}"), str::to_string);
                let policy: Policy = policy.new_id(PolicyId::new(id.clone()));
                set.add(policy).map_err(|e| PolicyError::Parse {
                    path: path.clone(),
                    diagnostic: format!("policy `{id}`: {}", diagnostic(&e)),
                })?;
            }
            if parsed.templates().next().is_some() {
                return Err(PolicyError::Parse {
                    path,
                    diagnostic: "templates are not supported; write plain policies".into(),
                });
            }
            files.push(path);
        }
        let schema = schema();
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            let text: Vec<String> = result
                .validation_errors()
                .map(|e| format!("- {}", diagnostic(e)))
                .collect();
            return Err(PolicyError::Invalid {
                diagnostic: text.join("\n"),
            });
        }
        let actions = schema
            .action_entities()
            .expect("the shipped schema's actions form valid entities");
        use sha2::Digest as _;
        Ok(Policies {
            set,
            schema,
            actions,
            files,
            digest: hex::encode(digest.finalize()),
        })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// SHA-256 over the files' names and texts, for the audit log.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn len(&self) -> usize {
        self.set.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// May `principal` do `action` on `resource`, given `context`?
    pub fn decide(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
        context: &RequestContext,
    ) -> Result<PolicyDecision, PolicyError> {
        let request_error = |e: &dyn std::fmt::Display| PolicyError::Request(e.to_string());
        let (principal_uid, principal_entities) = principal_entities(principal)?;
        let (resource_uid, resource_entity) = resource_entity(resource)?;
        let action_uid = uid("Hearth::Action", action.as_str());
        let mut json = serde_json::json!({
            "time": context.time as i64,
            "hour": ((context.time / 3600) % 24) as i64,
        });
        if let Some(ip) = context.source_ip {
            json["source_ip"] = serde_json::json!({"__extn": {"fn": "ip", "arg": ip.to_string()}});
        }
        if let Some(client) = &context.tls_client {
            json["tls_client"] = client.clone().into();
        }
        let cedar_context = Context::from_json_value(json, Some((&self.schema, &action_uid)))
            .map_err(|e| request_error(&e))?;
        let request = Request::new(
            principal_uid,
            action_uid,
            resource_uid,
            cedar_context,
            Some(&self.schema),
        )
        .map_err(|e| request_error(&e))?;
        let entities = Entities::from_entities(
            principal_entities.into_iter().chain([resource_entity]),
            Some(&self.schema),
        )
        .map_err(|e| request_error(&e))?
        .add_entities(self.actions.iter().cloned(), Some(&self.schema))
        .map_err(|e| request_error(&e))?;
        let response = Authorizer::new().is_authorized(&request, &self.set, &entities);
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        reasons.sort();
        let errors = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        Ok(PolicyDecision {
            allowed: response.decision() == Decision::Allow,
            reasons,
            errors,
        })
    }
}

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(kind).expect("a type the schema declares"),
        EntityId::new(id),
    )
}

fn tags(attrs: &BTreeMap<String, String>) -> Vec<(String, RestrictedExpression)> {
    attrs
        .iter()
        .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())))
        .collect()
}

/// The principal's entity (a key, or a JWT user) and its role entities.
fn principal_entities(p: &Principal) -> Result<(EntityUid, Vec<Entity>), PolicyError> {
    let roles: Vec<EntityUid> = p.roles.iter().map(|r| uid("Hearth::Role", r)).collect();
    let (kind, id, mut attrs) = match p.id.split_once(':') {
        Some(("key", id)) => ("Hearth::Key", id, vec![]),
        // JWT users are `Hearth::User::"<sub>"`; `issuer` tells providers apart.
        Some(("user", sub)) => (
            "Hearth::User",
            sub,
            vec![(
                "issuer".to_string(),
                RestrictedExpression::new_string(p.issuer.clone().unwrap_or_default()),
            )],
        ),
        _ => (
            "Hearth::User",
            p.id.as_str(),
            vec![(
                "issuer".to_string(),
                RestrictedExpression::new_string(p.issuer.clone().unwrap_or_default()),
            )],
        ),
    };
    attrs.push((
        "name".to_string(),
        RestrictedExpression::new_string(p.name.clone()),
    ));
    let principal_uid = uid(kind, id);
    let entity = Entity::new_with_tags(
        principal_uid.clone(),
        attrs,
        roles.iter().cloned(),
        tags(&p.attrs),
    )
    .map_err(|e| PolicyError::Request(e.to_string()))?;
    let mut entities = vec![entity];
    entities.extend(roles.into_iter().map(Entity::with_uid));
    Ok((principal_uid, entities))
}

fn resource_entity(r: &Resource) -> Result<(EntityUid, Entity), PolicyError> {
    match r {
        Resource::Model { name, attrs } => {
            let u = uid("Hearth::Model", name);
            let e = Entity::new_with_tags(u.clone(), [], [], tags(attrs))
                .map_err(|e| PolicyError::Request(e.to_string()))?;
            Ok((u, e))
        }
        Resource::Server => {
            let u = uid("Hearth::Server", "hearth");
            Ok((u.clone(), Entity::with_uid(u)))
        }
    }
}
