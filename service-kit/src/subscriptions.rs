//! Resource subscriptions of an MCP server whose handler is one value per session: which
//! sessions asked for updates to which URIs (`resources/subscribe`, the 2025 revisions),
//! and the open `subscriptions/listen` streams (2026-07-28), so that one change reaches
//! every subscriber with `notifications/resources/updated`. Knows nothing of what the
//! URIs name: the service says which URIs may be subscribed to and when one changed
//! ([`Subscriptions::updated`]).
//!
//! Invariant: an update goes only to the sessions subscribed to that exact URI (and to
//! the listen streams whose accepted filter names it); a session that unsubscribed, or
//! whose transport has closed, gets nothing and is forgotten.

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ErrorData, Peer, RoleServer,
    model::ResourceUpdatedNotificationParam,
    service::{SubscriptionContext, SubscriptionSendError},
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How long one subscriber may take to accept an update before it is skipped: a stuck
/// session must not hold up the change that caused the update.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Identifies one MCP session of the server (one handler value), for its subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey(u64);

/// The subscribers of one server, shared by all its sessions.
#[derive(Debug)]
pub struct Subscriptions {
    /// URI → the sessions subscribed to it, with the peer to notify.
    sessions: Mutex<HashMap<String, HashMap<SessionKey, Peer<RoleServer>>>>,
    /// Updated URIs, for the `subscriptions/listen` streams.
    updates: broadcast::Sender<String>,
    next_session: AtomicU64,
    /// Cancelled when the server stops: open listen streams then end.
    stop: CancellationToken,
}

impl Subscriptions {
    /// No subscribers yet; listen streams end when `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            sessions: Mutex::default(),
            updates: broadcast::channel(256).0,
            next_session: AtomicU64::new(1),
            stop,
        }
    }

    /// A key for a new session (a new handler value).
    pub fn new_session(&self) -> SessionKey {
        SessionKey(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<SessionKey, Peer<RoleServer>>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `session` (reached through `peer`) wants updates to `uri`; subscribing twice is
    /// the same as once. Sessions whose transport has closed are forgotten here.
    pub fn subscribe(&self, uri: &str, session: SessionKey, peer: Peer<RoleServer>) {
        let mut sessions = self.lock();
        sessions.retain(|_, peers| {
            peers.retain(|_, p| !p.is_transport_closed());
            !peers.is_empty()
        });
        sessions
            .entry(uri.to_string())
            .or_default()
            .insert(session, peer);
    }

    /// `session` no longer wants updates to `uri`; whether it had subscribed.
    pub fn unsubscribe(&self, uri: &str, session: SessionKey) -> bool {
        let mut sessions = self.lock();
        let Some(peers) = sessions.get_mut(uri) else {
            return false;
        };
        let removed = peers.remove(&session).is_some();
        if peers.is_empty() {
            sessions.remove(uri);
        }
        removed
    }

    /// How many sessions are subscribed to `uri` (through `resources/subscribe`).
    pub fn subscribers(&self, uri: &str) -> usize {
        self.lock().get(uri).map_or(0, HashMap::len)
    }

    /// `uri` changed: every session subscribed to it gets
    /// `notifications/resources/updated`, and so does every listen stream that accepted
    /// it. Returns once each subscribed session has taken the notification (or failed
    /// to within a few seconds, and been forgotten), so a caller that then answers its
    /// own request knows the updates went out first.
    pub async fn updated(&self, uri: &str) {
        // Err: no listen stream is open, which is fine.
        let _ = self.updates.send(uri.to_string());
        let peers: Vec<(SessionKey, Peer<RoleServer>)> = {
            let mut sessions = self.lock();
            let Some(peers) = sessions.get_mut(uri) else {
                return;
            };
            peers.retain(|_, p| !p.is_transport_closed());
            peers.iter().map(|(k, p)| (*k, p.clone())).collect()
        };
        let sends = peers.into_iter().map(|(session, peer)| async move {
            let param = ResourceUpdatedNotificationParam::new(uri);
            match tokio::time::timeout(SEND_TIMEOUT, peer.notify_resource_updated(param)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::debug!(uri, "resource update not delivered: {e}");
                    Some(session)
                }
                Err(_) => {
                    tracing::debug!(uri, "resource update not taken in time");
                    Some(session)
                }
            }
        });
        let failed: Vec<SessionKey> = futures::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect();
        for session in failed {
            self.unsubscribe(uri, session);
        }
    }

    /// Runs one `subscriptions/listen` stream (2026-07-28): relays the updates of the
    /// URIs its accepted filter names until the client cancels it or the server stops.
    pub async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut updates = self.updates.subscribe();
        loop {
            let uri = tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = self.stop.cancelled() => return Ok(()),
                update = updates.recv() => match update {
                    Ok(uri) => uri,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a listen stream fell behind; updates were lost");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            };
            match context.sink().notify_resource_updated(uri).await {
                // Not in this stream's filter: not for it.
                Ok(()) | Err(SubscriptionSendError::NotificationNotAccepted(_)) => {}
                Err(e) => {
                    tracing::debug!("listen stream closed: {e}");
                    return Ok(());
                }
            }
        }
    }
}
