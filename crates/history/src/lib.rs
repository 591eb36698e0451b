//! Stored conversations: the responses the Responses API keeps
//! (`store: true`), which `previous_response_id` continues and `GET`/
//! `DELETE /v1/responses/{id}` read. SQLite beside the key store; each
//! response is kept for a retention period and is visible only to the
//! principal that made it (a hospital's staff must not read each other's
//! answers by guessing ids). This crate knows no HTTP: a response is an
//! opaque JSON object to it.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use types::ChatMessage;

/// How long a stored response is kept: OpenAI's default.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
#[error("response store: {0}")]
pub struct ResponseStoreError(String);

fn sql(e: rusqlite::Error) -> ResponseStoreError {
    ResponseStoreError(e.to_string())
}

/// A stored response: the object a client sees, and the conversation it
/// ended (its input and its output as messages) for a follow-up.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub response: Value,
    pub history: Vec<ChatMessage>,
}

pub struct ResponseStore {
    conn: Mutex<Connection>,
    retention: Duration,
}

impl ResponseStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path, retention: Duration) -> Result<Self, ResponseStoreError> {
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        Self::init(conn, retention)
    }

    /// A store that lives as long as the process.
    pub fn in_memory(retention: Duration) -> Result<Self, ResponseStoreError> {
        Self::init(Connection::open_in_memory().map_err(sql)?, retention)
    }

    fn init(conn: Connection, retention: Duration) -> Result<Self, ResponseStoreError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS responses (
                 id TEXT PRIMARY KEY,
                 owner TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 response TEXT NOT NULL,
                 history TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
             PRAGMA user_version = 1;",
        )
        .map_err(sql)?;
        Ok(Self {
            conn: Mutex::new(conn),
            retention,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `response` (id `id`, made by `owner` at `created`, seconds).
    /// Expired responses are dropped on the way.
    pub fn put(
        &self,
        id: &str,
        owner: &str,
        created: u64,
        stored: &StoredResponse,
    ) -> Result<(), ResponseStoreError> {
        let history = serde_json::to_string(&stored.history).expect("messages serialise");
        let conn = self.conn();
        conn.execute(
            "DELETE FROM responses WHERE created_at < ?1",
            params![created.saturating_sub(self.retention.as_secs()) as i64],
        )
        .map_err(sql)?;
        conn.execute(
            "INSERT OR REPLACE INTO responses (id, owner, created_at, response, history)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                owner,
                created as i64,
                stored.response.to_string(),
                history
            ],
        )
        .map_err(sql)?;
        Ok(())
    }

    /// `owner`'s response `id`, unless it expired before `now`.
    pub fn get(
        &self,
        id: &str,
        owner: &str,
        now: u64,
    ) -> Result<Option<StoredResponse>, ResponseStoreError> {
        let oldest = now.saturating_sub(self.retention.as_secs()) as i64;
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT response, history FROM responses
                 WHERE id = ?1 AND owner = ?2 AND created_at >= ?3",
                params![id, owner, oldest],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        let Some((response, history)) = row else {
            return Ok(None);
        };
        let damaged = |e: serde_json::Error| ResponseStoreError(format!("response {id}: {e}"));
        Ok(Some(StoredResponse {
            response: serde_json::from_str(&response).map_err(damaged)?,
            history: serde_json::from_str(&history).map_err(damaged)?,
        }))
    }

    /// Deletes `owner`'s response `id`; false when there was none.
    pub fn delete(&self, id: &str, owner: &str) -> Result<bool, ResponseStoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM responses WHERE id = ?1 AND owner = ?2",
                params![id, owner],
            )
            .map_err(sql)?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use types::Role;

    fn stored(text: &str) -> StoredResponse {
        StoredResponse {
            response: json!({"id": "resp_1", "output_text": text}),
            history: vec![ChatMessage::new(Role::User, text)],
        }
    }

    #[test]
    fn a_response_is_its_owners_until_it_expires_or_is_deleted() {
        let store = ResponseStore::in_memory(Duration::from_secs(100)).unwrap();
        store.put("resp_1", "alice", 1_000, &stored("hi")).unwrap();
        assert_eq!(
            store.get("resp_1", "alice", 1_050).unwrap(),
            Some(stored("hi"))
        );
        assert_eq!(
            store.get("resp_1", "bob", 1_050).unwrap(),
            None,
            "others see nothing"
        );
        assert!(!store.delete("resp_1", "bob").unwrap(), "nor delete it");
        assert_eq!(
            store.get("resp_1", "alice", 1_101).unwrap(),
            None,
            "expired"
        );
        assert!(store.delete("resp_1", "alice").unwrap());
        assert!(!store.delete("resp_1", "alice").unwrap());
    }

    #[test]
    fn expired_responses_are_dropped_when_new_ones_arrive() {
        let store = ResponseStore::in_memory(Duration::from_secs(100)).unwrap();
        store.put("old", "a", 1_000, &stored("x")).unwrap();
        store.put("new", "a", 1_200, &stored("y")).unwrap();
        let rows: i64 = store
            .conn()
            .query_row("SELECT COUNT(*) FROM responses", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn the_store_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.db");
        ResponseStore::open(&path, RETENTION)
            .unwrap()
            .put("r", "a", 5, &stored("kept"))
            .unwrap();
        let again = ResponseStore::open(&path, RETENTION).unwrap();
        assert_eq!(again.get("r", "a", 10).unwrap(), Some(stored("kept")));
    }
}
