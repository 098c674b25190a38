//! A cluster's MCP sessions, which any replica serves (a PostgreSQL store only). The
//! replica that opens a session writes its row (owner, endpoint, the client's
//! `initialize` parameters) within the cluster's caps before the client hears its id;
//! a replica that meets an id it does not know reads the row once and adopts the
//! session: the pass-through path learns it like one opened here, and rmcp restores
//! its own copy from the parameters ([`RestoreFrom`], rmcp's `SessionStore`) by
//! replaying `initialize` under the same id. Use and confirmation are written in
//! batches; every replica sweeps the sessions idle for `session_idle_timeout_ms` (or
//! never confirmed) by the database's clock, and an ended session (DELETE, expiry) is
//! announced so every replica closes its copy.
//!
//! Invariant: a session id is served only while its row exists, and only to its owner on
//! its endpoint; a session this replica cannot check (store down) is refused with 503,
//! never adopted unchecked.

use std::{sync::Arc, time::Duration};

use dashmap::{DashMap, DashSet};
use rmcp::{
    model::InitializeRequestParams,
    transport::streamable_http_server::session::store::{
        SessionState, SessionStore, SessionStoreError,
    },
};

use crate::store::{
    StoreError,
    postgres::{Postgres, SessionCap, SessionRow},
};

/// The largest `initialize` parameters a shared session carries (they are replayed by
/// every replica that adopts it).
pub const MAX_INIT_BYTES: usize = 16 * 1024;

/// A session this replica adopted or opened: what rmcp needs to restore its copy.
#[derive(Clone)]
pub struct Adopted {
    pub init: Arc<InitializeRequestParams>,
    /// The same, as the client sent them (the row's text).
    pub init_text: Arc<str>,
    /// The owner and endpoint the row names.
    pub owner: Arc<str>,
    pub server: Option<Arc<str>>,
}

pub struct Shared {
    pg: Arc<Postgres>,
    adopted: DashMap<String, Adopted>,
    used: DashSet<String>,
    confirmed: DashSet<String>,
}

/// Why `initialize` could not open a shared session.
pub enum Refused {
    Cap(SessionCap),
    TooLarge,
    Store(StoreError),
}

impl Shared {
    pub fn new(pg: Arc<Postgres>) -> Arc<Self> {
        Arc::new(Self {
            pg,
            adopted: DashMap::new(),
            used: DashSet::new(),
            confirmed: DashSet::new(),
        })
    }

    /// Writes the row of a session this replica just opened (`init`: the client's
    /// `initialize` parameters, as sent), within the caps.
    pub async fn open(
        &self,
        id: &str,
        owner: &str,
        server: Option<&str>,
        init: &str,
        caps: (usize, usize),
    ) -> Result<(), Refused> {
        if init.len() > MAX_INIT_BYTES {
            return Err(Refused::TooLarge);
        }
        let row = SessionRow {
            id: id.to_string(),
            owner: owner.to_string(),
            server: server.map(String::from),
            init: init.to_string(),
        };
        match self.pg.open_session(&row, caps.0, caps.1).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(cap)) => Err(Refused::Cap(cap)),
            Err(e) => Err(Refused::Store(e)),
        }
    }

    /// The row of session `id`, read from the store, adopted here when it exists.
    pub async fn adopt(&self, id: &str) -> Result<Option<Adopted>, StoreError> {
        let Some(row) = self.pg.session(id).await? else {
            // Ended (or never opened): rmcp must not restore it from an old adoption.
            self.adopted.remove(id);
            return Ok(None);
        };
        let Ok(init) = serde_json::from_str::<InitializeRequestParams>(&row.init) else {
            tracing::warn!(session = %id, "a shared session's initialize parameters do not parse: not adopted");
            return Ok(None);
        };
        let adopted = Adopted {
            init: Arc::new(init),
            init_text: Arc::from(row.init),
            owner: Arc::from(row.owner),
            server: row.server.map(Arc::from),
        };
        self.adopted.insert(id.to_string(), adopted.clone());
        Ok(Some(adopted))
    }

    /// The protocol revision adopted session `id`'s client asked for.
    pub fn revision(&self, id: &str) -> Option<String> {
        self.adopted
            .get(id)
            .map(|a| a.init.protocol_version.as_str().to_string())
    }

    /// Whether session `id` was adopted here (rmcp may not hold its copy yet).
    pub fn is_adopted(&self, id: &str) -> bool {
        self.adopted.contains_key(id)
    }

    /// This replica closed its copy of session `id` (the session may go on elsewhere).
    pub fn forget(&self, id: &str) {
        self.adopted.remove(id);
    }

    /// Session `id` was used here.
    pub fn used(&self, id: &str) {
        if !self.used.contains(id) {
            self.used.insert(id.to_string());
        }
    }

    /// Session `id`'s client sent `notifications/initialized`.
    pub fn confirmed(&self, id: &str) {
        self.confirmed.insert(id.to_string());
    }

    /// Ends session `id` for the whole cluster (its DELETE).
    pub async fn end(&self, id: &str) -> Result<(), StoreError> {
        self.pg.end_sessions(&[id.to_string()]).await.map(|_| ())
    }

    /// Writes the uses and confirmations seen since the last time, then ends the
    /// sessions idle too long; the ids ended (each replica hears them from the store
    /// but this one, which closes its copies itself).
    pub async fn sweep(
        &self,
        idle: Duration,
        pending: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let take = |set: &DashSet<String>| {
            let ids: Vec<String> = set.iter().map(|k| k.clone()).collect();
            for id in &ids {
                set.remove(id);
            }
            ids
        };
        let (used, confirmed) = (take(&self.used), take(&self.confirmed));
        let result = self
            .pg
            .sweep_sessions(
                &used,
                &confirmed,
                i64::try_from(idle.as_millis()).unwrap_or(i64::MAX),
                i64::try_from(pending.as_millis()).unwrap_or(i64::MAX),
            )
            .await;
        if result.is_err() {
            // Written next time (the store is down: nothing expires meanwhile either).
            for id in used {
                self.used.insert(id);
            }
            for id in confirmed {
                self.confirmed.insert(id);
            }
        }
        result
    }
}

/// rmcp's restore of a session this replica adopted: the parameters [`Shared::adopt`]
/// read (never a second query); nothing is written through it (rows are the
/// endpoint's to write, within the caps).
pub struct RestoreFrom(pub Arc<Shared>);

#[async_trait::async_trait]
impl SessionStore for RestoreFrom {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(self
            .0
            .adopted
            .get(session_id)
            .map(|a| SessionState::new((*a.init).clone())))
    }

    async fn store(&self, _: &str, _: &SessionState) -> Result<(), SessionStoreError> {
        Ok(())
    }

    async fn delete(&self, _: &str) -> Result<(), SessionStoreError> {
        Ok(())
    }
}
