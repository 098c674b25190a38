//! The shared store of a cluster: PostgreSQL through a bounded pool (tokio-postgres,
//! deadpool), the schema's numbered migrations (`gateway/migrations/postgres/`), each
//! change announced in its own transaction with `NOTIFY` on [`CHANNEL`], one listening
//! connection per replica that reconnects by itself, and the replicas' heartbeats.
//!
//! Invariant: every write that other replicas must see notifies in the transaction that
//! makes it, so a replica that hears nothing has missed nothing, except while its
//! listening connection is down, after which it reads everything again
//! ([`Event::Resync`]).

use std::{sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt as _;
use rmcp::model::Tool;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{Ack, Change, Replica, StoreError, StoredInstance, cipher::Cipher};

/// The channel every replica listens on.
pub const CHANNEL: &str = "mcp_gateway";
/// Connections a replica's pool holds at most (registrations, refreshes, heartbeats:
/// never a call's path).
const POOL_SIZE: usize = 8;
/// How long a store operation waits for a connection: a store outage is a 503 this
/// quickly.
const WAIT: Duration = Duration::from_secs(3);
/// A replica is live while its last heartbeat is this recent.
pub const LIVE_MS: i64 = 10_000;
/// How long a client's answer waits for the replica that asked (it is taken within
/// milliseconds by a live one).
const ANSWERS_KEPT_MS: i64 = 60_000;
/// How often a replica heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// The schema's migrations, in order; each runs once, in a transaction, under an
/// advisory lock (replicas starting together migrate once).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "sessions",
        include_str!("../../migrations/postgres/0002_sessions.sql"),
    ),
    (
        3,
        "health",
        include_str!("../../migrations/postgres/0003_health.sql"),
    ),
    (
        4,
        "session state",
        include_str!("../../migrations/postgres/0004_session_state.sql"),
    ),
];
/// The advisory lock the cluster's health checker holds on its listening connection
/// (released with the connection: another replica takes over within a heartbeat).
const HEALTH_LOCK: i64 = 0x6d63_7066_6868; // "mcpfhh"
/// Session ids per notification (a payload stays under PostgreSQL's 8000 bytes).
const IDS_PER_NOTICE: usize = 100;
/// The advisory lock migrations hold (any constant the cluster agrees on).
const MIGRATION_LOCK: i64 = 0x6d63_7066_6564; // "mcpfed"
/// What the cluster table's key check seals.
const KEY_CHECK: &str = "mcp-federation cluster key check";

/// What a replica's listening connection hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Another replica changed this.
    Change(Change),
    /// Notifications may have been missed (the connection was (re)established, or the
    /// queue overflowed): read everything again.
    Resync,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Notice {
    from: String,
    change: Change,
}

/// One shared MCP session's row.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub id: String,
    pub owner: String,
    /// The virtual server whose endpoint opened it (`None`: `/mcp`).
    pub server: Option<String>,
    /// The client's `initialize` parameters (JSON), replayed to adopt the session.
    pub init: String,
    /// The level the client set (`logging/setLevel`), as the protocol spells it.
    pub level: Option<String>,
    /// The resource URIs the client subscribed to (`resources/subscribe`).
    pub subscriptions: Vec<String>,
}

/// Why a session was not opened in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCap {
    /// The owner holds this many already (`max_sessions_per_credential`).
    Owner(usize),
    /// The cluster holds this many already (`max_sessions`).
    Total(usize),
}

pub struct Postgres {
    pool: Pool,
    config: tokio_postgres::Config,
    cipher: Cipher,
    /// The URL without its password, for messages.
    display: String,
    /// This replica's id (its own notifications are not news to it).
    replica: String,
    /// Whether [`Self::ready`] succeeded: until then nothing is read or written (the
    /// schema may be missing, the key may be another cluster's).
    joined: std::sync::atomic::AtomicBool,
    /// Why the store refused this replica for good (a wrong key, a newer schema).
    refused: std::sync::Mutex<Option<String>>,
    /// Whether this replica is the cluster's health checker (holds [`HEALTH_LOCK`]).
    checker: std::sync::atomic::AtomicBool,
    /// Whether its listening connection is up (else it hears no verdicts).
    listening: std::sync::atomic::AtomicBool,
}

/// An upstream instance's state as the cluster's health checker last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRow {
    pub url: String,
    pub state: String,
    pub why: Option<String>,
}

/// `url` with its password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "postgres://(unparseable URL)".into(),
    }
}

impl Postgres {
    /// A store for `url`, connected on first use.
    pub fn new(url: &str, cluster_key: &str, replica: &str) -> Result<Self, StoreError> {
        let display = redact(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Schema {
            store: display.clone(),
            why: format!("not a PostgreSQL URL: {e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(WAIT);
        }
        config.application_name("mcp-federation-gateway");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .recycle_timeout(Some(WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Schema {
                store: display.clone(),
                why: format!("cannot build the connection pool: {e}"),
            })?;
        Ok(Self {
            pool,
            config,
            cipher: Cipher::new(cluster_key),
            display,
            replica: replica.to_string(),
            joined: std::sync::atomic::AtomicBool::new(false),
            refused: std::sync::Mutex::new(None),
            checker: std::sync::atomic::AtomicBool::new(false),
            listening: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The store's URL without its password.
    pub fn display(&self) -> &str {
        &self.display
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            store: self.display.clone(),
            why: why.to_string(),
        }
    }

    fn err(&self, e: tokio_postgres::Error) -> StoreError {
        // No answer from the server (closed, I/O): unavailable; an answer: a failure.
        if e.as_db_error().is_none() {
            return self.unavailable(e);
        }
        StoreError::Postgres {
            store: self.display.clone(),
            why: e.to_string(),
        }
    }

    /// A pooled connection, once the replica has joined.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if !self.joined.load(std::sync::atomic::Ordering::Acquire) {
            let refused = self
                .refused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(match refused {
                Some(why) => StoreError::Schema {
                    store: self.display.clone(),
                    why,
                },
                None => self.unavailable("not reached yet since this replica started"),
            });
        }
        self.connection().await
    }

    async fn connection(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| self.unavailable(e))
    }

    /// Migrates the schema and checks the cluster key: the store is ready for this
    /// replica. Refuses a schema newer than this gateway knows, and a cluster key other
    /// than the one the store's secrets were sealed with.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let joined = self.migrate().await;
        match &joined {
            Ok(()) => self
                .joined
                .store(true, std::sync::atomic::Ordering::Release),
            Err(StoreError::Schema { why, .. }) => {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            }
            Err(_) => {}
        }
        joined
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.connection().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)"
        ))
        .await
        .map_err(|e| self.err(e))?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if let Some(newer) = applied.iter().copied().filter(|v| *v > known).max() {
            return Err(StoreError::Schema {
                store: self.display.clone(),
                why: format!(
                    "its schema is at version {newer}, newer than this gateway knows ({known}): run a gateway at least as new as the one that migrated it"
                ),
            });
        }
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await.map_err(|e| self.err(e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
                &[version, name, &crate::vocab::now_ms()],
            )
            .await
            .map_err(|e| self.err(e))?;
            tracing::info!(store = %self.display, version, name, "store schema migrated");
        }
        let check = tx
            .query_opt("SELECT value FROM cluster WHERE key = 'key_check'", &[])
            .await
            .map_err(|e| self.err(e))?;
        match check {
            Some(row) => {
                let sealed: String = row.get(0);
                if self.cipher.open(&sealed, "key_check").as_deref() != Some(KEY_CHECK) {
                    return Err(StoreError::Schema {
                        store: self.display.clone(),
                        why: "its secrets were sealed with another cluster_key: every replica must be given the same one (GATEWAY_CLUSTER_KEY)".into(),
                    });
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO cluster (key, value) VALUES ('key_check', $1)
                     ON CONFLICT (key) DO NOTHING",
                    &[&self.cipher.seal(KEY_CHECK, "key_check")],
                )
                .await
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    fn seal(&self, column: &str, i: &StoredInstance, value: Option<String>) -> Option<String> {
        value.map(|v| {
            self.cipher
                .seal(&v, &format!("{column}\0{}\0{}", i.name, i.url))
        })
    }

    fn open_sealed<T: serde::de::DeserializeOwned>(
        &self,
        column: &str,
        name: &str,
        url: &str,
        sealed: Option<String>,
    ) -> Result<Option<T>, StoreError> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let sealed_err = || StoreError::Sealed {
            store: self.display.clone(),
            name: name.to_string(),
        };
        let plain = self
            .cipher
            .open(&sealed, &format!("{column}\0{name}\0{url}"))
            .ok_or_else(sealed_err)?;
        serde_json::from_str(&plain)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                path: self.display.clone(),
                name: name.to_string(),
                source,
            })
    }

    /// Every stored instance (of service `name`, when given), by name then time.
    pub async fn load(&self, name: Option<&str>) -> Result<Vec<StoredInstance>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, url, weight, call_timeout_ms, tools, registered_at_ms, owner, auth,
                   command
                 FROM instances WHERE $1::TEXT IS NULL OR name = $1
                 ORDER BY name, registered_at_ms, url",
                &[&name],
            )
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (name, url): (String, String) = (r.get(0), r.get(1));
            let tools: String = r.get(4);
            let tools = serde_json::from_str(&tools).map_err(|source| StoreError::Corrupt {
                path: self.display.clone(),
                name: name.clone(),
                source,
            })?;
            let auth = self.open_sealed("auth", &name, &url, r.get(7))?;
            let command = self.open_sealed("command", &name, &url, r.get(8))?;
            out.push(StoredInstance {
                weight: u32::try_from(r.get::<_, i32>(2)).unwrap_or(1).max(1),
                call_timeout_ms: r
                    .get::<_, Option<i64>>(3)
                    .and_then(|t| u64::try_from(t).ok()),
                tools,
                registered_at_ms: r.get(5),
                owner: r.get(6),
                auth,
                command,
                name,
                url,
            });
        }
        Ok(out)
    }

    fn notice(&self, change: Change) -> String {
        serde_json::to_string(&Notice {
            from: self.replica.clone(),
            change,
        })
        .expect("a notice serializes")
    }

    /// See [`super::Store::register`].
    pub async fn register(&self, i: &StoredInstance, replace: bool) -> Result<(), StoreError> {
        let tools = serde_json::to_string(&i.tools).expect("tools serialize");
        let auth = self.seal(
            "auth",
            i,
            i.auth
                .as_ref()
                .map(|a| serde_json::to_string(a).expect("auth serializes")),
        );
        let command = self.seal(
            "command",
            i,
            i.command
                .as_ref()
                .map(|c| serde_json::to_string(c).expect("command serializes")),
        );
        let weight = i32::try_from(i.weight).unwrap_or(i32::MAX);
        let timeout = i
            .call_timeout_ms
            .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        if replace {
            tx.execute("DELETE FROM instances WHERE name = $1", &[&i.name])
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.execute(
            "INSERT INTO instances
               (name, url, weight, call_timeout_ms, tools, registered_at_ms, owner, auth,
                command)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (name, url) DO UPDATE SET weight = excluded.weight,
               call_timeout_ms = excluded.call_timeout_ms, tools = excluded.tools,
               registered_at_ms = excluded.registered_at_ms, owner = excluded.owner,
               auth = excluded.auth, command = excluded.command",
            &[
                &i.name,
                &i.url,
                &weight,
                &timeout,
                &tools,
                &i.registered_at_ms,
                &i.owner,
                &auth,
                &command,
            ],
        )
        .await
        .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM reservations WHERE name = $1", &[&i.name])
            .await
            .map_err(|e| self.err(e))?;
        self.notify(&tx, Change::Service(i.name.clone())).await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn notify(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        change: Change,
    ) -> Result<(), StoreError> {
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &self.notice(change)],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// See [`super::Store::update_tools`] (not announced: every replica reads a
    /// backend's tools itself).
    pub async fn update_tools(
        &self,
        name: &str,
        url: &str,
        tools: &[Tool],
    ) -> Result<(), StoreError> {
        let tools = serde_json::to_string(tools).expect("tools serialize");
        self.client()
            .await?
            .execute(
                "UPDATE instances SET tools = $3 WHERE name = $1 AND url = $2",
                &[&name, &url, &tools],
            )
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// See [`super::Store::remove_reserving`].
    pub async fn remove_reserving(
        &self,
        name: &str,
        owner: Option<&str>,
        until_ms: i64,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        let n = tx
            .execute("DELETE FROM instances WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.err(e))?;
        if let Some(owner) = owner {
            tx.execute(
                "INSERT INTO reservations (name, owner, until_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,
                   until_ms = excluded.until_ms",
                &[&name, &owner, &until_ms],
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        self.notify(&tx, Change::Service(name.to_string())).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(n as usize)
    }

    /// See [`super::Store::reservation`].
    pub async fn reservation(&self, name: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM reservations WHERE until_ms <= $1", &[&now_ms])
            .await
            .map_err(|e| self.err(e))?;
        let row = client
            .query_opt("SELECT owner FROM reservations WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// See [`super::Store::remove`].
    pub async fn remove(&self, name: &str, url: &str) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        let n = tx
            .execute(
                "DELETE FROM instances WHERE name = $1 AND url = $2",
                &[&name, &url],
            )
            .await
            .map_err(|e| self.err(e))?;
        self.notify(&tx, Change::Service(name.to_string())).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(n as usize)
    }

    /// See [`super::Store::virtual_servers`].
    pub async fn virtual_servers(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name, definition FROM virtual_servers ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Stores a virtual server's definition, or removes it (`None`).
    pub async fn put_virtual_server(
        &self,
        name: &str,
        definition: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        let written = match definition {
            Some(definition) => {
                tx.execute(
                    "INSERT INTO virtual_servers (name, definition) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET definition = excluded.definition",
                    &[&name, &definition],
                )
                .await
            }
            None => {
                tx.execute("DELETE FROM virtual_servers WHERE name = $1", &[&name])
                    .await
            }
        };
        written.map_err(|e| self.err(e))?;
        self.notify(&tx, Change::Server(name.to_string())).await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Records this replica's heartbeat (and forgets replicas silent for an hour).
    pub async fn heartbeat(
        &self,
        address: &str,
        host: &str,
        started_ms: i64,
    ) -> Result<(), StoreError> {
        let now = crate::vocab::now_ms();
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO replicas (id, address, host, started_ms, seen_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms,
                   address = excluded.address",
                &[&self.replica, &address, &host, &started_ms, &now],
            )
            .await
            .map_err(|e| self.err(e))?;
        client
            .execute(
                "DELETE FROM replicas WHERE seen_ms < $1",
                &[&(now - 3_600_000)],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The replicas heard from within [`LIVE_MS`], oldest first.
    pub async fn replicas(&self) -> Result<Vec<Replica>, StoreError> {
        let since = crate::vocab::now_ms() - LIVE_MS;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, address, host, started_ms, seen_ms FROM replicas
                 WHERE seen_ms >= $1 ORDER BY started_ms, id",
                &[&since],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| Replica {
                id: r.get(0),
                address: r.get(1),
                host: r.get(2),
                started_ms: r.get(3),
                seen_ms: r.get(4),
            })
            .collect())
    }

    /// Removes this replica's heartbeat (it is shutting down).
    pub async fn leave(&self) {
        if let Ok(client) = self.client().await {
            let _ = client
                .execute("DELETE FROM replicas WHERE id = $1", &[&self.replica])
                .await;
        }
    }

    /// Opens a shared session within the cluster's caps: the owner's sessions are
    /// counted under a lock of the owner's (exact), all sessions without one (a burst
    /// of initializes may pass `max_total` by as many as run at once).
    pub async fn open_session(
        &self,
        row: &SessionRow,
        max_per_owner: usize,
        max_total: usize,
    ) -> Result<Result<(), SessionCap>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7262))",
            &[&row.owner],
        )
        .await
        .map_err(|e| self.err(e))?;
        let counts = tx
            .query_one(
                "SELECT count(*) FILTER (WHERE owner = $1), count(*) FROM mcp_sessions",
                &[&row.owner],
            )
            .await
            .map_err(|e| self.err(e))?;
        let (mine, all): (i64, i64) = (counts.get(0), counts.get(1));
        if mine as usize >= max_per_owner {
            return Ok(Err(SessionCap::Owner(mine as usize)));
        }
        if all as usize >= max_total {
            return Ok(Err(SessionCap::Total(all as usize)));
        }
        tx.execute(
            "INSERT INTO mcp_sessions (id, owner, server, init) VALUES ($1, $2, $3, $4)",
            &[&row.id, &row.owner, &row.server, &row.init],
        )
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(Ok(()))
    }

    /// The shared session `id`, if it has not ended.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id, owner, server, init, level, subscriptions FROM mcp_sessions
                 WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| SessionRow {
            id: r.get(0),
            owner: r.get(1),
            server: r.get(2),
            init: r.get(3),
            level: r.get(4),
            subscriptions: r.get(5),
        }))
    }

    /// Sets a shared session's log level, telling every replica; false when its row
    /// is gone.
    pub async fn set_session_level(
        &self,
        id: &str,
        level: &str,
        ack: Ack,
    ) -> Result<bool, StoreError> {
        self.change_session(
            id,
            "UPDATE mcp_sessions SET level = $2 WHERE id = $1",
            level,
            ack,
        )
        .await
    }

    /// Adds (or removes) a resource subscription of a shared session, telling every
    /// replica; false when its row is gone.
    pub async fn set_session_subscription(
        &self,
        id: &str,
        uri: &str,
        subscribed: bool,
        ack: Ack,
    ) -> Result<bool, StoreError> {
        let sql = if subscribed {
            "UPDATE mcp_sessions
             SET subscriptions = array_append(array_remove(subscriptions, $2), $2)
             WHERE id = $1"
        } else {
            "UPDATE mcp_sessions SET subscriptions = array_remove(subscriptions, $2)
             WHERE id = $1"
        };
        self.change_session(id, sql, uri, ack).await
    }

    async fn change_session(
        &self,
        id: &str,
        sql: &str,
        value: &str,
        ack: Ack,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        let changed = tx
            .execute(sql, &[&id, &value])
            .await
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Ok(false);
        }
        let id = id.to_string();
        self.notify(&tx, Change::Session { id, ack }).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Holds a client's answer (`body`, one JSON-RPC message) to a request replica
    /// `to` sent session `session`, and tells that replica; false (nothing held) when
    /// `to` is not a live replica.
    pub async fn relay_answer(
        &self,
        to: &str,
        session: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        let held = tx
            .execute(
                "INSERT INTO mcp_answers (replica, session, body)
                 SELECT $1, $2, $3 WHERE EXISTS
                   (SELECT 1 FROM replicas WHERE id = $1 AND seen_ms > $4)",
                &[&to, &session, &body, &(crate::vocab::now_ms() - LIVE_MS)],
            )
            .await
            .map_err(|e| self.err(e))?;
        if held == 0 {
            return Ok(false);
        }
        self.notify(&tx, Change::Answers(to.to_string())).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Tells every other replica `change`, outside any write (what it announces is not
    /// in the store: a backend's lists, read by each replica itself).
    pub async fn announce(&self, change: Change) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &self.notice(change)],
            )
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Takes the answers held for this replica, oldest first: (session, body).
    pub async fn take_answers(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut rows: Vec<(i64, String, String)> = self
            .client()
            .await?
            .query(
                "DELETE FROM mcp_answers WHERE replica = $1 RETURNING id, session, body",
                &[&self.replica],
            )
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        rows.sort_by_key(|r| r.0);
        Ok(rows.into_iter().map(|(_, s, b)| (s, b)).collect())
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Ends shared sessions (a DELETE, with the `ack` its replica waits for; or
    /// expiry), telling every replica in the same transaction; those that were still
    /// there.
    pub async fn end_sessions(
        &self,
        ids: &[String],
        ack: Option<Ack>,
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        let ended: Vec<String> = tx
            .query(
                "DELETE FROM mcp_sessions WHERE id = ANY($1) RETURNING id",
                &[&ids],
            )
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for chunk in ended.chunks(IDS_PER_NOTICE) {
            let (ids, ack) = (chunk.to_vec(), ack.clone());
            self.notify(&tx, Change::SessionsEnded { ids, ack }).await?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(ended)
    }

    /// Records that sessions were used (and which were confirmed with
    /// `notifications/initialized`), then ends those unused for `idle_ms` and those
    /// never confirmed within `pending_ms`, by the database's clock; the sessions
    /// ended, and the used ones that had ended already.
    pub async fn sweep_sessions(
        &self,
        used: &[String],
        confirmed: &[String],
        idle_ms: i64,
        pending_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        // A session used here whose row is gone ended while this replica was not
        // listening (a missed notification): it is ended here too.
        let mut gone: Vec<String> = Vec::new();
        if !used.is_empty() {
            let kept: std::collections::HashSet<String> = client
                .query(
                    "UPDATE mcp_sessions SET last_used_ms = gateway_now_ms() WHERE id = ANY($1)
                     RETURNING id",
                    &[&used],
                )
                .await
                .map_err(|e| self.err(e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            gone.extend(used.iter().filter(|id| !kept.contains(*id)).cloned());
        }
        if !confirmed.is_empty() {
            client
                .execute(
                    "UPDATE mcp_sessions SET confirmed = true WHERE id = ANY($1)",
                    &[&confirmed],
                )
                .await
                .map_err(|e| self.err(e))?;
        }
        drop(client);
        let expired: Vec<String> = self
            .client()
            .await?
            .query(
                "SELECT id FROM mcp_sessions
                 WHERE last_used_ms < gateway_now_ms() - $1
                    OR (NOT confirmed AND created_ms < gateway_now_ms() - $2)
                 LIMIT 1000",
                &[&idle_ms, &pending_ms],
            )
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Answers for a replica that died before it took them.
        self.client()
            .await?
            .execute(
                "DELETE FROM mcp_answers WHERE created_ms < gateway_now_ms() - $1",
                &[&ANSWERS_KEPT_MS],
            )
            .await
            .map_err(|e| self.err(e))?;
        let mut ended = self.end_sessions(&expired, None).await?;
        ended.extend(gone);
        Ok(ended)
    }

    /// Whether this replica is the cluster's health checker now.
    pub fn is_checker(&self) -> bool {
        self.checker.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this replica hears the cluster's changes now (its listening connection
    /// is up).
    pub fn is_listening(&self) -> bool {
        self.listening.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes the states of `service`'s instances (URL, state, why) that changed, and
    /// tells the other replicas.
    pub async fn publish_health(
        &self,
        service: &str,
        states: &[(String, String, Option<String>)],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.err(e))?;
        for (url, state, why) in states {
            tx.execute(
                "INSERT INTO upstream_health (service, url, state, why) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (service, url) DO UPDATE SET state = excluded.state,
                   why = excluded.why, at_ms = gateway_now_ms()",
                &[&service, url, state, why],
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        self.notify(&tx, Change::Health(service.to_string()))
            .await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// The states the health checker last wrote for `service`'s instances.
    pub async fn health_of(&self, service: &str) -> Result<Vec<HealthRow>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT url, state, why FROM upstream_health WHERE service = $1",
                &[&service],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| HealthRow {
                url: r.get(0),
                state: r.get(1),
                why: r.get(2),
            })
            .collect())
    }

    /// Listens for other replicas' changes until `stop`: a connection of its own,
    /// reconnected with backoff whenever it drops; each (re)connection is followed by
    /// [`Event::Resync`].
    pub fn listen(self: &Arc<Self>, stop: CancellationToken) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(1024);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            let mut said_down = false;
            loop {
                match this.listen_once(&tx, &stop).await {
                    Ok(()) => return,
                    Err((connected, why)) => {
                        if connected || !said_down {
                            tracing::warn!(store = %this.display,
                                "store notifications unavailable ({why}); serving from memory, reconnecting");
                        }
                        if connected {
                            backoff = Duration::from_millis(200);
                        }
                        said_down = true;
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }

    /// One listening connection: `Ok` when stopped, `Err` (whether it had connected,
    /// why) when the connection failed.
    async fn listen_once(
        &self,
        tx: &mpsc::Sender<Event>,
        stop: &CancellationToken,
    ) -> Result<(), (bool, String)> {
        let (client, mut connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| (false, e.to_string()))?;
        let (ntx, mut nrx) = mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if ntx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let _abort = AbortOnDrop(driver);
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| (false, e.to_string()))?;
        tracing::info!(store = %self.display, "listening for the cluster's changes");
        // Whatever changed while nobody listened (or before this replica started).
        if tx.send(Event::Resync).await.is_err() {
            return Ok(());
        }
        let mut overflowed = false;
        let mut tick = tokio::time::interval(HEARTBEAT);
        // The health checker's lock is this connection's: it goes with the connection.
        let _checker = ResetOnDrop(&self.checker);
        self.listening
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _listening = ResetOnDrop(&self.listening);
        loop {
            let payload = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                p = nrx.recv() => p,
                _ = tick.tick() => {
                    if !self.is_checker() {
                        let got = client
                            .query_one("SELECT pg_try_advisory_lock($1)", &[&HEALTH_LOCK])
                            .await
                            .map_err(|e| (true, e.to_string()))?;
                        if got.get::<_, bool>(0) {
                            tracing::info!(store = %self.display,
                                "this replica checks the upstreams' health for the cluster");
                            self.checker.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    continue;
                }
            };
            let Some(payload) = payload else {
                return Err((true, "the listening connection closed".into()));
            };
            let notice: Notice = match serde_json::from_str(&payload) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("an unreadable store notification is ignored: {e}");
                    continue;
                }
            };
            if notice.from == self.replica {
                continue;
            }
            if overflowed && tx.try_send(Event::Resync).is_ok() {
                overflowed = false;
            }
            match tx.try_send(Event::Change(notice.change)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => overflowed = true,
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            }
        }
    }
}

struct ResetOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
