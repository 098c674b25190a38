//! The embedded registration store: one SQLite file (WAL journal, full fsync), so that an
//! accepted registration survives a restart or a crash and a crash mid-write never leaves
//! a half-written record. It stores what was registered and the last-known tool
//! definitions, which the gateway keeps listing while a service is down.
//!
//! Calls are synchronous and short; `Store` runs them on the blocking pool.
//!
//! Invariant: an acknowledged registration is on disk (WAL, `synchronous=FULL`) before
//! it is acknowledged.

use std::{path::Path, sync::Mutex};

use rmcp::model::Tool;
use rusqlite::{Connection, params};

use super::{StoreError, StoredInstance};

pub struct Sqlite {
    path: String,
    conn: Mutex<Connection>,
}

impl Sqlite {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let display = path.display().to_string();
        let wrap = |source| StoreError::Sqlite {
            path: display.clone(),
            source,
        };
        create_private(path);
        let conn = Connection::open(path).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(wrap)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS instances (
                name TEXT NOT NULL,
                url TEXT NOT NULL,
                weight INTEGER NOT NULL DEFAULT 1,
                call_timeout_ms INTEGER,
                tools TEXT NOT NULL,
                registered_at_ms INTEGER NOT NULL,
                owner TEXT,
                auth TEXT,
                PRIMARY KEY (name, url)
            ) STRICT;
            CREATE TABLE IF NOT EXISTS reservations (
                name TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                until_ms INTEGER NOT NULL
            ) STRICT;
            CREATE TABLE IF NOT EXISTS virtual_servers (
                name TEXT PRIMARY KEY,
                definition TEXT NOT NULL
            ) STRICT;",
        )
        .map_err(wrap)?;
        // Stores written before owners, upstream credentials and stdio servers existed.
        for column in ["owner", "auth", "command"] {
            let present: bool = conn
                .query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info('instances') WHERE name = ?1",
                    [column],
                    |r| r.get(0),
                )
                .map_err(wrap)?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE instances ADD COLUMN {column} TEXT"))
                    .map_err(wrap)?;
            }
        }
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

    /// Every stored virtual server's definition (JSON), by name.
    pub fn virtual_servers(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, definition FROM virtual_servers ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Stores (or replaces) a virtual server's definition.
    pub fn put_virtual_server(&self, name: &str, definition: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO virtual_servers (name, definition) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET definition = excluded.definition",
                [name, definition],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Removes a virtual server; whether there was one.
    pub fn remove_virtual_server(&self, name: &str) -> Result<bool, StoreError> {
        self.conn()
            .execute("DELETE FROM virtual_servers WHERE name = ?1", [name])
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// Every stored instance, by service name then registration time.
    pub fn load(&self) -> Result<Vec<StoredInstance>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT name, url, weight, call_timeout_ms, tools, registered_at_ms, owner, auth,
                   command
                 FROM instances ORDER BY name, registered_at_ms, url",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, url, weight, timeout, tools, registered_at_ms, owner, auth, command) =
                row.map_err(|e| self.err(e))?;
            let corrupt = |source| StoreError::Corrupt {
                path: self.path.clone(),
                name: name.clone(),
                source,
            };
            let tools = serde_json::from_str(&tools).map_err(corrupt)?;
            let auth = auth
                .map(|a| serde_json::from_str(&a))
                .transpose()
                .map_err(corrupt)?;
            let command = command
                .map(|c| serde_json::from_str(&c))
                .transpose()
                .map_err(corrupt)?;
            out.push(StoredInstance {
                name,
                url,
                weight: u32::try_from(weight).unwrap_or(1).max(1),
                call_timeout_ms: timeout.and_then(|t| u64::try_from(t).ok()),
                tools,
                registered_at_ms,
                owner,
                auth,
                command,
            });
        }
        Ok(out)
    }

    /// Inserts or replaces one instance; with `replace_service`, first removes every other
    /// instance of that service, in the same transaction.
    pub fn upsert(&self, i: &StoredInstance, replace_service: bool) -> Result<(), StoreError> {
        let tools = serde_json::to_string(&i.tools).expect("tools serialize");
        let auth = i
            .auth
            .as_ref()
            .map(|a| serde_json::to_string(a).expect("auth serializes"));
        let command = i
            .command
            .as_ref()
            .map(|c| serde_json::to_string(c).expect("command serializes"));
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        if replace_service {
            tx.execute("DELETE FROM instances WHERE name = ?1", params![i.name])
                .map_err(|e| self.err(e))?;
        }
        tx.execute(
            "INSERT INTO instances
               (name, url, weight, call_timeout_ms, tools, registered_at_ms, owner, auth,
                command)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(name, url) DO UPDATE SET weight = excluded.weight,
               call_timeout_ms = excluded.call_timeout_ms, tools = excluded.tools,
               registered_at_ms = excluded.registered_at_ms, owner = excluded.owner,
               auth = excluded.auth, command = excluded.command",
            params![
                i.name,
                i.url,
                i.weight,
                i.call_timeout_ms.map(|t| t as i64),
                tools,
                i.registered_at_ms,
                i.owner,
                auth,
                command
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Updates the last-known tools of a stored instance (no-op if absent).
    pub fn update_tools(&self, name: &str, url: &str, tools: &[Tool]) -> Result<(), StoreError> {
        let tools = serde_json::to_string(tools).expect("tools serialize");
        self.conn()
            .execute(
                "UPDATE instances SET tools = ?3 WHERE name = ?1 AND url = ?2",
                params![name, url, tools],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Removes every instance of service `name` and, in the same transaction, reserves
    /// the name for `owner` until `until_ms` (when there is an owner).
    pub fn remove_reserving(
        &self,
        name: &str,
        owner: Option<&str>,
        until_ms: i64,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let n = tx
            .execute("DELETE FROM instances WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        if let Some(owner) = owner {
            tx.execute(
                "INSERT INTO reservations (name, owner, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET owner = excluded.owner,
                   until_ms = excluded.until_ms",
                params![name, owner, until_ms],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// Who `name` is reserved for, if anyone is at `now_ms` (expired reservations are
    /// dropped).
    pub fn reservation(&self, name: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM reservations WHERE until_ms <= ?1",
            params![now_ms],
        )
        .map_err(|e| self.err(e))?;
        let mut stmt = conn
            .prepare_cached("SELECT owner FROM reservations WHERE name = ?1")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![name]).map_err(|e| self.err(e))?;
        match rows.next().map_err(|e| self.err(e))? {
            Some(row) => Ok(Some(row.get(0).map_err(|e| self.err(e))?)),
            None => Ok(None),
        }
    }

    /// Ends the reservation of `name` (its owner registered it again).
    pub fn release(&self, name: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM reservations WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Removes one instance (`url`) or every instance of a service; returns how many.
    pub fn remove(&self, name: &str, url: Option<&str>) -> Result<usize, StoreError> {
        let conn = self.conn();
        let n = match url {
            Some(url) => conn.execute(
                "DELETE FROM instances WHERE name = ?1 AND url = ?2",
                params![name, url],
            ),
            None => conn.execute("DELETE FROM instances WHERE name = ?1", params![name]),
        };
        n.map_err(|e| self.err(e))
    }
}

/// Creates the file readable by its owner only before SQLite opens it, so the store is
/// never briefly readable by others. (SQLite gives its `-wal` and `-shm` files the
/// database file's mode.)
fn create_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The store holds upstream URLs and credentials: readable by its owner only.
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
    use crate::upstream::secret::UpstreamAuth;

    fn tool(name: &str) -> Tool {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "description": "d",
            "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}, "$defs": {"x": {}}}
        }))
        .expect("tool")
    }

    fn instance(name: &str, url: &str, tool_name: &str, at: i64) -> StoredInstance {
        StoredInstance {
            name: name.into(),
            url: url.into(),
            weight: 1,
            call_timeout_ms: None,
            tools: vec![tool(tool_name)],
            registered_at_ms: at,
            owner: None,
            auth: None,
            command: None,
        }
    }

    #[test]
    fn instances_survive_reopening_and_are_keyed_by_name_and_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gw.db");
        {
            let store = Sqlite::open(&path).expect("open");
            store
                .upsert(&instance("a", "http://h:1/mcp", "t1", 1), false)
                .expect("insert");
            store
                .upsert(&instance("a", "http://h:1/mcp", "t2", 2), false)
                .expect("same url");
            store
                .upsert(&instance("a", "http://h:2/mcp", "t2", 3), false)
                .expect("second");
            let mut slow = instance("b", "http://h:3/mcp", "t3", 4);
            slow.call_timeout_ms = Some(1500);
            slow.weight = 3;
            store.upsert(&slow, false).expect("b");
        }
        let store = Sqlite::open(&path).expect("reopen");
        let all = store.load().expect("load");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].tools, vec![tool("t2")]);
        assert_eq!((all[2].weight, all[2].call_timeout_ms), (3, Some(1500)));
        store
            .update_tools("a", "http://h:2/mcp", &[tool("t9")])
            .expect("update");
        assert_eq!(store.load().expect("load")[1].tools, vec![tool("t9")]);
        assert_eq!(
            store
                .remove("a", Some("http://h:1/mcp"))
                .expect("remove one"),
            1
        );
        assert_eq!(store.remove("a", None).expect("remove service"), 1);
        assert_eq!(store.remove("a", None).expect("again"), 0);
        store
            .upsert(&instance("b", "http://h:4/mcp", "t4", 5), true)
            .expect("replace");
        let all = store.load().expect("load");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].url, "http://h:4/mcp");
    }

    #[cfg(unix)]
    #[test]
    fn the_store_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gw.db");
        let store = Sqlite::open(&path).expect("open");
        let mut i = instance("a", "http://h:1/mcp", "t", 1);
        i.auth = Some(UpstreamAuth::bearer("upstream-secret"));
        store.upsert(&i, false).expect("insert");
        for file in ["gw.db", "gw.db-wal", "gw.db-shm"] {
            let path = dir.path().join(file);
            let mode = std::fs::metadata(&path).expect(file).permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    #[test]
    fn owners_and_credentials_round_trip_and_old_stores_are_upgraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        {
            // The schema before owners and credentials.
            let conn = Connection::open(&path).expect("old");
            conn.execute_batch(
                "CREATE TABLE instances (name TEXT NOT NULL, url TEXT NOT NULL,
                   weight INTEGER NOT NULL DEFAULT 1, call_timeout_ms INTEGER,
                   tools TEXT NOT NULL, registered_at_ms INTEGER NOT NULL,
                   PRIMARY KEY (name, url)) STRICT;
                 INSERT INTO instances VALUES ('old', 'http://h:1/mcp', 1, NULL, '[]', 1);",
            )
            .expect("old schema");
        }
        let store = Sqlite::open(&path).expect("upgrade");
        let all = store.load().expect("load");
        assert_eq!(
            (all[0].owner.as_deref(), all[0].auth.as_ref()),
            (None, None)
        );
        let mut i = instance("new", "http://h:2/mcp", "t", 2);
        i.owner = Some("ci-bot".into());
        i.auth = Some(UpstreamAuth::bearer("tok-1"));
        store.upsert(&i, false).expect("insert");
        drop(store);
        let all = Sqlite::open(&path).expect("reopen").load().expect("load");
        let new = all.iter().find(|i| i.name == "new").expect("new");
        assert_eq!(new.owner.as_deref(), Some("ci-bot"));
        assert_eq!(new.auth, Some(UpstreamAuth::bearer("tok-1")));
        let old = all.iter().find(|i| i.name == "old").expect("old");
        assert_eq!((old.owner.as_deref(), old.auth.as_ref()), (None, None));
    }
}
