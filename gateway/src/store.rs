//! The embedded registration store: one SQLite file (WAL journal, full fsync), so that an
//! accepted registration survives a restart or a crash and a crash mid-write never leaves
//! a half-written record. It stores what was registered and the last-known tool
//! definitions, which the gateway keeps listing while a service is down.
//!
//! Only the registry talks to the store. Calls are synchronous and short; async callers
//! run them on the blocking pool.

use std::{path::Path, sync::Mutex};

use rmcp::model::Tool;
use rusqlite::{Connection, OptionalExtension, params};

/// One persisted registration.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredService {
    pub name: String,
    pub url: String,
    /// Last tool definitions read from the service, exactly as it sent them.
    pub tools: Vec<Tool>,
    /// Unix time (ms) of the registration.
    pub registered_at_ms: i64,
}

/// Errors of the store; the message names the file and the operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("registration store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("registration store {path}: stored tools of {name:?} are unreadable: {source}")]
    Corrupt {
        path: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

pub struct Store {
    path: String,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let display = path.display().to_string();
        let wrap = |source| StoreError::Sqlite {
            path: display.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(wrap)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS services (
                name TEXT PRIMARY KEY NOT NULL,
                url TEXT NOT NULL,
                tools TEXT NOT NULL,
                registered_at_ms INTEGER NOT NULL
            ) STRICT;",
        )
        .map_err(wrap)?;
        restrict_permissions(path);
        Ok(Self {
            path: display,
            conn: Mutex::new(conn),
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (each call is
        // one statement or one transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every stored registration, by name.
    pub fn load(&self) -> Result<Vec<StoredService>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, url, tools, registered_at_ms FROM services ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, url, tools, registered_at_ms) = row.map_err(|e| self.err(e))?;
            let tools = serde_json::from_str(&tools).map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                name: name.clone(),
                source,
            })?;
            out.push(StoredService {
                name,
                url,
                tools,
                registered_at_ms,
            });
        }
        Ok(out)
    }

    /// Inserts or replaces the registration of `service.name`.
    pub fn upsert(&self, service: &StoredService) -> Result<(), StoreError> {
        let tools = serde_json::to_string(&service.tools).expect("tools serialize");
        self.conn()
            .execute(
                "INSERT INTO services (name, url, tools, registered_at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET url = excluded.url, tools = excluded.tools,
                 registered_at_ms = excluded.registered_at_ms",
                params![service.name, service.url, tools, service.registered_at_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Updates the last-known tools of a stored registration (no-op if absent).
    pub fn update_tools(&self, name: &str, tools: &[Tool]) -> Result<(), StoreError> {
        let tools = serde_json::to_string(tools).expect("tools serialize");
        self.conn()
            .execute(
                "UPDATE services SET tools = ?2 WHERE name = ?1",
                params![name, tools],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Removes a registration; returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM services WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// The stored URL of `name`, if registered.
    pub fn url_of(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT url FROM services WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

/// The store holds upstream URLs (and later credentials): readable by its owner only.
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), "cannot restrict store permissions: {e}");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Tool {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "description": "d",
            "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}, "$defs": {"x": {}}}
        }))
        .expect("tool")
    }

    #[test]
    fn registrations_survive_reopening_and_replace_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gw.db");
        {
            let store = Store::open(&path).expect("open");
            store
                .upsert(&StoredService {
                    name: "a".into(),
                    url: "http://127.0.0.1:1/mcp".into(),
                    tools: vec![tool("t1")],
                    registered_at_ms: 1,
                })
                .expect("insert");
            store
                .upsert(&StoredService {
                    name: "a".into(),
                    url: "http://127.0.0.1:2/mcp".into(),
                    tools: vec![tool("t2")],
                    registered_at_ms: 2,
                })
                .expect("replace");
        }
        let store = Store::open(&path).expect("reopen");
        let all = store.load().expect("load");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].url, "http://127.0.0.1:2/mcp");
        assert_eq!(all[0].tools, vec![tool("t2")]);
        store.update_tools("a", &[tool("t3")]).expect("update");
        assert_eq!(store.load().expect("load")[0].tools, vec![tool("t3")]);
        assert!(store.remove("a").expect("remove"));
        assert!(!store.remove("a").expect("remove again"));
        assert!(store.load().expect("load").is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn the_store_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gw.db");
        Store::open(&path).expect("open");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
