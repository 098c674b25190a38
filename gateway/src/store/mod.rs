//! Where registrations live: what was registered (instances, owners, upstream
//! credentials, stdio commands), the last-known tool definitions (listed while a service
//! is down), name reservations and run-time virtual servers. Either the embedded SQLite
//! file (the default: one gateway, no server to run) or PostgreSQL, shared by the
//! replicas of a cluster, which also carries their change notifications and heartbeats.
//!
//! The registry talks to it for registrations; with PostgreSQL, `sessions` also does
//! for a cluster's MCP sessions (at `initialize`, once per session a replica adopts, and
//! in batches for their use). Never on a call's path.
//!
//! Invariant: a change is durable (and, in PostgreSQL, announced to every replica in the
//! same transaction) before the registry acknowledges it; a failed write changes nothing.

pub mod cipher;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use rmcp::model::Tool;

use crate::upstream::{secret::UpstreamAuth, stdio::Command};

/// One persisted registration: an instance of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInstance {
    pub name: String,
    pub url: String,
    pub weight: u32,
    /// Per-service call deadline given at registration, if any.
    pub call_timeout_ms: Option<u64>,
    /// Last tool definitions read from the instance, exactly as it sent them.
    pub tools: Vec<Tool>,
    /// Unix time (ms) of the registration.
    pub registered_at_ms: i64,
    /// The identity that registered it (`None` in stores from before owners).
    pub owner: Option<String>,
    /// The gateway's credential towards the instance.
    pub auth: Option<UpstreamAuth>,
    /// A stdio server's command (its env may hold secrets, like `auth`).
    pub command: Option<Command>,
}

impl StoredInstance {
    /// A digest of what the registration says (not its tools): two rows with the same
    /// stamp start the same instance.
    pub fn stamp(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &self.url,
            self.weight,
            self.call_timeout_ms,
            self.registered_at_ms,
            &self.owner,
        )
            .hash(&mut h);
        serde_json::to_string(&self.auth)
            .unwrap_or_default()
            .hash(&mut h);
        serde_json::to_string(&self.command)
            .unwrap_or_default()
            .hash(&mut h);
        h.finish()
    }
}

/// What changed, as one replica announces it to the others.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// A service's instances (read them again).
    Service(String),
    /// A virtual server's definition.
    Server(String),
    /// These shared MCP sessions ended (a DELETE, or expiry): replicas close their
    /// copies, and say so when `ack` asks (a DELETE's replica waits for it).
    SessionsEnded { ids: Vec<String>, ack: Option<Ack> },
    /// Replica `by` followed the change `ack` names (closed its copies of an ended
    /// session, applied a new level or subscriptions): the replica that made the change
    /// answers its client once every live replica has.
    Followed { by: String, ack: Ack },
    /// The health checker wrote new states for a service's instances.
    Health(String),
    /// A client's answers wait in the store for the replica with this id, which asked.
    Answers(String),
    /// A shared session's log level or resource subscriptions changed: replicas holding
    /// a copy read its row again, then say so (the replica that made the change waits).
    Session { id: String, ack: Ack },
    /// A service's backend told one replica its lists changed (`list_changed` reaches
    /// only the upstream session it was sent on): every replica lists it again.
    Relist(String),
}

/// Names one change of a shared session for the replicas that follow it: the replica
/// waiting for them (`to`) and a token of its own for the change, so that a word about
/// an earlier or another change is never taken for this one's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ack {
    pub to: String,
    pub token: u64,
}

/// A live replica of the cluster, as its heartbeats say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub address: String,
    pub host: String,
    pub started_ms: i64,
    pub seen_ms: i64,
}

/// Errors of the store; the message names the store and what failed.
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
    /// The store cannot be reached (PostgreSQL down, the pool's wait timed out).
    #[error("registration store {store} is unavailable: {why}")]
    Unavailable { store: String, why: String },
    #[error("registration store {store}: {why}")]
    Postgres { store: String, why: String },
    #[error(
        "registration store {store}: the stored secrets of {name:?} do not open with this cluster_key (every replica must share one)"
    )]
    Sealed { store: String, name: String },
    #[error("registration store {store}: {why}")]
    Schema { store: String, why: String },
    #[error("registration store: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether the store could not be reached (a retry may succeed): 503, not 500.
    pub fn unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The registry's store.
#[derive(Clone)]
pub enum Store {
    Sqlite(Arc<sqlite::Sqlite>),
    Postgres(Arc<postgres::Postgres>),
}

impl Store {
    /// Opens the store `location` names: a PostgreSQL URL (connected lazily: the store
    /// may be down when a replica starts; [`postgres::Postgres::ready`] says when it is
    /// not) with the cluster's key, or a SQLite file, opened now.
    pub fn open(
        location: &std::path::Path,
        cluster_key: Option<&str>,
        replica: &str,
    ) -> Result<Self, StoreError> {
        match location.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let key = cluster_key.ok_or_else(|| StoreError::Schema {
                    store: postgres::redact(url),
                    why: "a PostgreSQL store needs cluster_key".into(),
                })?;
                Ok(Store::Postgres(Arc::new(postgres::Postgres::new(
                    url, key, replica,
                )?)))
            }
            _ => Ok(Store::Sqlite(Arc::new(sqlite::Sqlite::open(location)?))),
        }
    }

    /// The shared store of a cluster, if this is one.
    pub fn cluster(&self) -> Option<&Arc<postgres::Postgres>> {
        match self {
            Store::Postgres(pg) => Some(pg),
            Store::Sqlite(_) => None,
        }
    }

    /// Runs a SQLite operation on the blocking pool.
    async fn blocking<T: Send + 'static>(
        db: &Arc<sqlite::Sqlite>,
        f: impl FnOnce(&sqlite::Sqlite) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Task(format!("the store task failed: {e}")))?
    }

    /// Every stored instance, by service name then registration time.
    pub async fn load(&self) -> Result<Vec<StoredInstance>, StoreError> {
        match self {
            Store::Sqlite(db) => Self::blocking(db, |db| db.load()).await,
            Store::Postgres(pg) => pg.load(None).await,
        }
    }

    /// The stored instances of service `name`.
    pub async fn load_service(&self, name: &str) -> Result<Vec<StoredInstance>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(self
                .load()
                .await?
                .into_iter()
                .filter(|i| i.name == name)
                .collect()),
            Store::Postgres(pg) => pg.load(Some(name)).await,
        }
    }

    /// Stores (or replaces) one instance and ends its name's reservation; with
    /// `replace_service`, first removes every other instance of that service. One
    /// transaction.
    pub async fn register(
        &self,
        i: &StoredInstance,
        replace_service: bool,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(db) => {
                let i = i.clone();
                Self::blocking(db, move |db| {
                    db.upsert(&i, replace_service)?;
                    db.release(&i.name)
                })
                .await
            }
            Store::Postgres(pg) => pg.register(i, replace_service).await,
        }
    }

    /// Updates the last-known tools of a stored instance (no-op if absent).
    pub async fn update_tools(
        &self,
        name: &str,
        url: &str,
        tools: &[Tool],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(db) => {
                let (name, url, tools) = (name.to_string(), url.to_string(), tools.to_vec());
                Self::blocking(db, move |db| db.update_tools(&name, &url, &tools)).await
            }
            Store::Postgres(pg) => pg.update_tools(name, url, tools).await,
        }
    }

    /// Removes every instance of service `name` and reserves the name for `owner` until
    /// `until_ms` (when there is an owner); how many instances went.
    pub async fn remove_reserving(
        &self,
        name: &str,
        owner: Option<&str>,
        until_ms: i64,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(db) => {
                let (name, owner) = (name.to_string(), owner.map(String::from));
                Self::blocking(db, move |db| {
                    db.remove_reserving(&name, owner.as_deref(), until_ms)
                })
                .await
            }
            Store::Postgres(pg) => pg.remove_reserving(name, owner, until_ms).await,
        }
    }

    /// Who `name` is reserved for at `now_ms`, if anyone.
    pub async fn reservation(&self, name: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(db) => {
                let name = name.to_string();
                Self::blocking(db, move |db| db.reservation(&name, now_ms)).await
            }
            Store::Postgres(pg) => pg.reservation(name, now_ms).await,
        }
    }

    /// Removes one instance of service `name`; how many went.
    pub async fn remove(&self, name: &str, url: &str) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(db) => {
                let (name, url) = (name.to_string(), url.to_string());
                Self::blocking(db, move |db| db.remove(&name, Some(&url))).await
            }
            Store::Postgres(pg) => pg.remove(name, url).await,
        }
    }

    /// Every stored virtual server's definition (JSON), by name.
    pub async fn virtual_servers(&self) -> Result<Vec<(String, String)>, StoreError> {
        match self {
            Store::Sqlite(db) => Self::blocking(db, |db| db.virtual_servers()).await,
            Store::Postgres(pg) => pg.virtual_servers().await,
        }
    }

    /// Stores (or replaces) a virtual server's definition.
    pub async fn put_virtual_server(&self, name: &str, definition: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(db) => {
                let (name, definition) = (name.to_string(), definition.to_string());
                Self::blocking(db, move |db| db.put_virtual_server(&name, &definition)).await
            }
            Store::Postgres(pg) => pg.put_virtual_server(name, Some(definition)).await,
        }
    }

    /// Removes a virtual server's definition.
    pub async fn remove_virtual_server(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(db) => {
                let name = name.to_string();
                Self::blocking(db, move |db| db.remove_virtual_server(&name).map(|_| ())).await
            }
            Store::Postgres(pg) => pg.put_virtual_server(name, None).await,
        }
    }
}
