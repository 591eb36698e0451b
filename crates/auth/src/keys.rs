//! API keys: random secrets shown once, stored as SHA-256 hashes in SQLite.
//!
//! A key reads `hth_<id>_<secret>`. The id (12 hex digits) is public: it is
//! listed, logged, revoked by and audited. The secret (32 random bytes) is
//! printed once at creation and only its hash is kept. A plain SHA-256 is
//! enough here, unlike for passwords: 256 random bits leave nothing to
//! guess, so a slow hash would only slow every request.
//!
//! Every check reads the database, so a key created or revoked by another
//! process (`hearth keys revoke` beside a running server) counts from the
//! next request. WAL mode lets that writer and the server's readers work at
//! once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use types::Priority;

use crate::error::{AuthError, StoreError};
use crate::principal::Principal;
use crate::quota::{DailyUsage, Limits};

/// Every Hearth API key starts with this.
pub const KEY_PREFIX: &str = "hth_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// Schema changes in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE api_keys (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        secret_sha256 BLOB NOT NULL,
        roles         TEXT NOT NULL,
        attrs         TEXT NOT NULL,
        priority      TEXT,
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER,
        revoked_at    INTEGER
    ) STRICT;",
    "ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER;
     ALTER TABLE api_keys ADD COLUMN tokens_per_minute INTEGER;
     ALTER TABLE api_keys ADD COLUMN tokens_per_day INTEGER;",
    // Tokens each account used per day, so a restart does not reset
    // daily budgets.
    "CREATE TABLE quota_usage (
        account TEXT NOT NULL,
        day     INTEGER NOT NULL,
        tokens  INTEGER NOT NULL,
        PRIMARY KEY (account, day)
    ) STRICT;",
];

/// What `hearth keys create` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub roles: BTreeSet<String>,
    pub attrs: BTreeMap<String, String>,
    pub priority: Option<Priority>,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<u64>,
    pub limits: Limits,
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub roles: BTreeSet<String>,
    pub attrs: BTreeMap<String, String>,
    pub priority: Option<Priority>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub limits: Limits,
}

impl KeyInfo {
    /// Who a request with this key is.
    pub fn principal(&self) -> Principal {
        Principal {
            id: format!("key:{}", self.id),
            name: self.name.clone(),
            issuer: None,
            roles: self.roles.clone(),
            attrs: self.attrs.clone(),
            priority: self.priority,
            limits: self.limits,
        }
    }
}

/// The key database under `$HEARTH_HOME`.
pub struct KeyStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl KeyStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<KeyStore, StoreError> {
        let sql = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            // A missing directory is reported by SQLite below, by path.
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(sql)?;
        restrict_permissions(path);
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        let store = KeyStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let known = MIGRATIONS.len() as i64;
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        if found > known {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (version, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(step).map_err(|e| self.sql(e))?;
            tx.pragma_update(None, "user_version", version as i64 + 1)
                .map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))
    }

    /// Creates a key; returns it and the full secret, which is not kept.
    pub fn create(&self, new: &NewKey, now: u64) -> Result<(KeyInfo, String), StoreError> {
        validate(new)?;
        let id = hex::encode(random::<ID_BYTES>()?);
        let secret = hex::encode(random::<SECRET_BYTES>()?);
        let info = KeyInfo {
            id: id.clone(),
            name: new.name.clone(),
            roles: new.roles.clone(),
            attrs: new.attrs.clone(),
            priority: new.priority,
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
            limits: new.limits,
        };
        self.lock()
            .execute(
                "INSERT INTO api_keys (id, name, secret_sha256, roles, attrs, priority, created_at, expires_at,
                                       requests_per_minute, tokens_per_minute, tokens_per_day)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    id,
                    new.name,
                    hash(&secret).to_vec(),
                    json(&new.roles),
                    json(&new.attrs),
                    new.priority.map(Priority::as_str),
                    now as i64,
                    new.expires_at.map(|t| t as i64),
                    new.limits.requests_per_minute,
                    new.limits.tokens_per_minute.map(|t| t as i64),
                    new.limits.tokens_per_day.map(|t| t as i64),
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok((info, format!("{KEY_PREFIX}{id}_{secret}")))
    }

    /// Every key ever created, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!("{SELECT} ORDER BY created_at, id"))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], row_to_key)
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(rows.into_iter().map(|(info, _)| info).collect())
    }

    /// Marks a key revoked from `now` on; revoking twice keeps the first time.
    pub fn revoke(&self, id: &str, now: u64) -> Result<KeyInfo, StoreError> {
        let id = id.strip_prefix(KEY_PREFIX).unwrap_or(id);
        // Ids are hex: anything with `_` may be a whole key pasted by
        // mistake, and its secret must not come back in the error.
        if id.contains('_') {
            return Err(StoreError::Invalid {
                field: "id",
                reason: "give the key's id (as `hearth keys list` shows it), not the key itself"
                    .into(),
            });
        }
        let changed = self
            .lock()
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, now as i64],
            )
            .map_err(|e| self.sql(e))?;
        if changed == 0 {
            return Err(StoreError::NoSuchKey(id.to_string()));
        }
        self.get(id)?
            .map(|(info, _)| info)
            .ok_or_else(|| StoreError::NoSuchKey(id.to_string()))
    }

    /// Whether any key was ever created. Revoked and expired keys count:
    /// revoking the last key must not open the server to everyone.
    pub fn any(&self) -> Result<bool, StoreError> {
        self.lock()
            .query_row("SELECT EXISTS (SELECT 1 FROM api_keys)", [], |r| r.get(0))
            .map_err(|e| self.sql(e))
    }

    /// One key by id (with or without the `hth_` prefix).
    pub fn find(&self, id: &str) -> Result<Option<KeyInfo>, StoreError> {
        let id = id.strip_prefix(KEY_PREFIX).unwrap_or(id);
        Ok(self.get(id)?.map(|(info, _)| info))
    }

    fn get(&self, id: &str) -> Result<Option<(KeyInfo, Vec<u8>)>, StoreError> {
        self.lock()
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], row_to_key)
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// The principal a presented key stands for, checked at `now`.
    pub fn authenticate(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        let (id, secret) = token
            .strip_prefix(KEY_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or(AuthError::InvalidKey)?;
        let found = self.get(id).map_err(|err| {
            tracing::error!(%err, "cannot read the key store");
            AuthError::Unavailable
        })?;
        // Hash and compare even for an unknown id, in constant time, so the
        // answer's timing says nothing about the secret.
        let presented = hash(secret);
        let (info, stored) = match found {
            Some((info, stored)) => (Some(info), stored),
            None => (None, vec![0u8; 32]),
        };
        let matches: bool = presented.as_slice().ct_eq(stored.as_slice()).into();
        let info = info.filter(|_| matches).ok_or(AuthError::InvalidKey)?;
        if info.revoked_at.is_some_and(|t| t <= now) {
            return Err(AuthError::Revoked { id: info.id });
        }
        if info.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::Expired { id: info.id });
        }
        Ok(info.principal())
    }
}

impl KeyStore {
    /// Writes each account's settled usage for its day, in one
    /// transaction, and forgets days more than a week old. Counts only
    /// grow: a save that lost a race with a newer one cannot lower them.
    pub fn save_usage(&self, usage: &[DailyUsage]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        for u in usage {
            tx.execute(
                "INSERT INTO quota_usage (account, day, tokens) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account, day) DO UPDATE SET tokens = MAX(tokens, excluded.tokens)",
                params![u.account, u.day as i64, u.tokens as i64],
            )
            .map_err(|e| self.sql(e))?;
        }
        if let Some(newest) = usage.iter().map(|u| u.day).max() {
            tx.execute(
                "DELETE FROM quota_usage WHERE day < ?1",
                [newest.saturating_sub(7) as i64],
            )
            .map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))
    }

    /// Every account's saved usage on `day` (Unix days).
    pub fn load_usage(&self, day: u64) -> Result<Vec<DailyUsage>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT account, tokens FROM quota_usage WHERE day = ?1")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([day as i64], |r| {
                Ok(DailyUsage {
                    account: r.get(0)?,
                    day,
                    tokens: r.get::<_, i64>(1)? as u64,
                })
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e));
        rows
    }
}

const SELECT: &str =
    "SELECT id, name, roles, attrs, priority, created_at, expires_at, revoked_at, secret_sha256,
                              requests_per_minute, tokens_per_minute, tokens_per_day FROM api_keys";

fn row_to_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<(KeyInfo, Vec<u8>)> {
    fn parse_json<T: serde::de::DeserializeOwned>(i: usize, text: String) -> rusqlite::Result<T> {
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    }
    let priority: Option<String> = row.get(4)?;
    let info = KeyInfo {
        id: row.get(0)?,
        name: row.get(1)?,
        roles: parse_json(2, row.get(2)?)?,
        attrs: parse_json(3, row.get(3)?)?,
        priority: priority.as_deref().and_then(Priority::parse),
        created_at: row.get::<_, i64>(5)? as u64,
        expires_at: row.get::<_, Option<i64>>(6)?.map(|t| t as u64),
        revoked_at: row.get::<_, Option<i64>>(7)?.map(|t| t as u64),
        limits: Limits {
            requests_per_minute: row.get(9)?,
            tokens_per_minute: row.get::<_, Option<i64>>(10)?.map(|t| t as u64),
            tokens_per_day: row.get::<_, Option<i64>>(11)?.map(|t| t as u64),
        },
    };
    Ok((info, row.get(8)?))
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("sets and maps of strings serialise")
}

fn random<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Names, roles and attribute names end up in policies, logs and audit
/// lines: keep them to plain identifiers.
fn validate(new: &NewKey) -> Result<(), StoreError> {
    let invalid = |field, reason: String| Err(StoreError::Invalid { field, reason });
    let ident = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if new.name.trim().is_empty() || new.name.len() > 128 || new.name.chars().any(char::is_control)
    {
        return invalid("name", "1 to 128 printable characters".into());
    }
    if let Some(r) = new.roles.iter().find(|r| !ident(r)) {
        return invalid(
            "role",
            format!("{r:?}: letters, digits, `_`, `-`, `.`; at most 64"),
        );
    }
    for (k, v) in &new.attrs {
        if !ident(k) {
            return invalid(
                "attr",
                format!("{k:?}: letters, digits, `_`, `-`, `.`; at most 64"),
            );
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return invalid(
                "attr",
                format!("value of {k}: at most 256 printable characters"),
            );
        }
    }
    Ok(())
}

/// The database holds no secrets, but who may do what is still nobody
/// else's business.
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}
