//! A cluster's MCP sessions, which any replica serves (a PostgreSQL store only). The
//! replica that opens a session writes its row (owner, endpoint, the client's
//! `initialize` parameters) within the cluster's caps before the client hears its id;
//! a replica that meets an id it does not know reads the row once and adopts the
//! session: the pass-through path learns it like one opened here, and rmcp restores
//! its own copy from the parameters ([`RestoreFrom`], rmcp's `SessionStore`) by
//! replaying `initialize` under the same id. Use and confirmation are written in
//! batches; every replica sweeps the sessions idle for `session_idle_timeout_ms` (or
//! never confirmed) by the database's clock, and an ended session (DELETE, expiry) is
//! announced so every replica closes its copy. What the client sets later (its log
//! level, its resource subscriptions) is the row's too, announced to every copy; and
//! its answers to what a replica asked it reach that replica whichever one they are
//! posted to ([`Tagged`]).
//!
//! Invariant: a session id is served only while its row exists, and only to its owner on
//! its endpoint; a session this replica cannot check (store down) is refused with 503,
//! never adopted unchecked.

use std::{sync::Arc, time::Duration};

use dashmap::{DashMap, DashSet};
use futures::{Stream, StreamExt as _};
use rmcp::{
    model::{
        ClientJsonRpcMessage, InitializeRequestParams, JsonRpcMessage, LoggingLevel,
        NumberOrString, ServerJsonRpcMessage, ServerNotification,
    },
    transport::streamable_http_server::session::{
        EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
        local::{LocalSessionManager, LocalSessionManagerError},
        store::{SessionState, SessionStore, SessionStoreError},
    },
};

use crate::store::{
    Ack, StoreError,
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
    /// What the client set after `initialize`, as the row had it when adopted.
    pub state: SessionSettings,
}

/// What a session's client set after `initialize` that every replica serving it holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionSettings {
    /// `logging/setLevel`.
    pub level: Option<LoggingLevel>,
    /// `resources/subscribe`, by public URI.
    pub subscriptions: Vec<String>,
}

impl SessionSettings {
    fn of(row: &SessionRow) -> Self {
        Self {
            level: row
                .level
                .as_deref()
                .and_then(|l| serde_json::from_value(serde_json::Value::from(l)).ok()),
            subscriptions: row.subscriptions.clone(),
        }
    }
}

pub struct Shared {
    pg: Arc<Postgres>,
    adopted: DashMap<String, Adopted>,
    used: DashSet<String>,
    confirmed: DashSet<String>,
}

/// How long a change of a shared session (its DELETE, level or subscriptions) waits for
/// the other live replicas to follow it before it is answered anyway (SECURITY.md).
pub const FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// The other live replicas, which are to follow a change of a session before the
/// client hears it done: a request that follows the answer to any of them then sees
/// the session as changed (a DELETE's 404, the new level). Taken before the change is
/// written, so that no replica's word is missed; the change carries [`Self::ack`].
pub struct Followers {
    news: tokio::sync::broadcast::Receiver<crate::store::postgres::Event>,
    peers: Vec<String>,
    ack: Ack,
}

impl Followers {
    /// This replica's peers, as its last heartbeat read them, and a fresh token.
    pub fn of(registry: &crate::registry::Registry) -> Self {
        let news = registry.watch_sessions();
        let peers = registry
            .cluster()
            .map(|c| c.replicas.into_iter().filter(|r| !r.current).map(|r| r.id))
            .into_iter()
            .flatten()
            .collect();
        let ack = Ack {
            to: registry.replica().to_string(),
            token: rand::random(),
        };
        Self { news, peers, ack }
    }

    /// What the change carries for the replicas to say they followed it.
    pub fn ack(&self) -> Ack {
        self.ack.clone()
    }

    /// Waits up to [`FOLLOW_WAIT`] for every peer to say it followed this change
    /// (session `id`'s, named in the log). Those that did not (down, or their
    /// notifications lag) follow when they hear of it: an ended session at once, or
    /// at their next sweep; a level or subscriptions at their next resync.
    pub async fn wait(mut self, id: &str) {
        use crate::store::{Change, postgres::Event};
        use tokio::sync::broadcast::error::RecvError;
        let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
        while !self.peers.is_empty() {
            match tokio::time::timeout_at(deadline, self.news.recv()).await {
                Err(_) | Ok(Err(RecvError::Closed)) => break,
                Ok(Ok(Event::Change(Change::Followed { by, ack }))) if ack == self.ack => {
                    self.peers.retain(|p| *p != by);
                }
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            }
        }
        if !self.peers.is_empty() {
            tracing::warn!(session = %id, late = ?self.peers,
                "replicas did not follow a change of a session in time; they follow it when they hear of it");
        }
    }
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
            level: None,
            subscriptions: Vec::new(),
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
            state: SessionSettings::of(&row),
            init_text: Arc::from(row.init),
            owner: Arc::from(row.owner),
            server: row.server.map(Arc::from),
        };
        self.adopted.insert(id.to_string(), adopted.clone());
        Ok(Some(adopted))
    }

    /// What session `id`'s client set, as its row says now (`None`: the session ended).
    pub async fn settings(&self, id: &str) -> Result<Option<SessionSettings>, StoreError> {
        Ok(self.pg.session(id).await?.as_ref().map(SessionSettings::of))
    }

    /// What adopted session `id`'s client had set when this replica adopted it.
    pub fn adopted_settings(&self, id: &str) -> Option<SessionSettings> {
        self.adopted.get(id).map(|a| a.state.clone())
    }

    /// Session `id`'s client set its log level: every replica serving it hears (false
    /// when its row is gone: nobody does).
    pub async fn set_level(
        &self,
        id: &str,
        level: LoggingLevel,
        ack: Ack,
    ) -> Result<bool, StoreError> {
        let level = serde_json::to_value(level).expect("a level serializes");
        self.pg
            .set_session_level(id, level.as_str().unwrap_or_default(), ack)
            .await
    }

    /// Session `id`'s client subscribed to `uri` (or unsubscribed): every replica
    /// serving it hears.
    pub async fn set_subscription(
        &self,
        id: &str,
        uri: &str,
        subscribed: bool,
        ack: Ack,
    ) -> Result<bool, StoreError> {
        self.pg
            .set_session_subscription(id, uri, subscribed, ack)
            .await
    }

    /// The answers other replicas hold for this one: (session, JSON-RPC message).
    pub async fn take_answers(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.pg.take_answers().await
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

    /// Ends session `id` for the whole cluster (its DELETE), then waits for the other
    /// live replicas to close their copies ([`Followers::wait`]).
    pub async fn end(&self, id: &str, followers: Followers) -> Result<(), StoreError> {
        let ended = self
            .pg
            .end_sessions(&[id.to_string()], Some(followers.ack()))
            .await?;
        // Nothing to wait for when the row was gone already (expired, or ended by a
        // DELETE through another replica, whose ending the replicas follow alike).
        if !ended.is_empty() {
            followers.wait(id).await;
        }
        Ok(())
    }

    /// Tells the replica waiting for it that this one followed the change `ack` names
    /// (closed its copies of an ended session, applied a level or subscriptions).
    pub async fn followed(&self, ack: Ack) -> Result<(), StoreError> {
        let by = self.pg.replica().to_string();
        self.pg
            .announce(crate::store::Change::Followed { by, ack })
            .await
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

/// rmcp's session manager for a cluster's replica: the requests it sends a client
/// (sampling, elicitation, roots, during a call or on the session's stream) carry the
/// replica's id in their JSON-RPC id (`<replica>:<n>`), so the client's answer, posted
/// to whichever replica the load balancer picks, is passed to the replica that asked:
/// its own locally, another's through the store ([`Postgres::relay_answer`], taken by
/// that replica as soon as it hears). Outside a cluster it is rmcp's manager unchanged.
pub struct Tagged {
    pub inner: Arc<LocalSessionManager>,
    cluster: Option<(Arc<Shared>, Arc<str>)>,
    calls: Arc<CallStreams>,
    /// Sessions whose copy [`Self::retire`] closes, each with who waits for its worker's
    /// last act.
    retiring: DashMap<String, tokio::sync::oneshot::Sender<()>>,
}

/// The streams of the requests in flight (POSTs answered with SSE), by session and
/// JSON-RPC id: what the typed path sends about a request that rmcp would put on the
/// session's GET stream (a backend's log messages during a call; rmcp routes only
/// progress by request) goes on the request's own stream through here, as the protocol
/// wants and as the pass-through path does. Without a GET stream (or with it on another
/// replica of a cluster) those messages were lost.
#[derive(Default)]
pub struct CallStreams {
    open: DashMap<(String, String), tokio::sync::mpsc::Sender<ServerSseMessage>>,
}

/// Messages one request's stream holds for its client beside rmcp's.
const ASIDE_CAPACITY: usize = 64;

impl CallStreams {
    /// The stream of request `request` (its JSON-RPC id) in session `session`, while
    /// it is open.
    pub fn of(
        &self,
        session: &str,
        request: &NumberOrString,
    ) -> Option<tokio::sync::mpsc::Sender<ServerSseMessage>> {
        let key = (session.to_string(), request_key(request));
        self.open.get(&key).map(|tx| tx.clone())
    }
}

fn request_key(id: &NumberOrString) -> String {
    serde_json::to_string(id).expect("an id serializes")
}

/// Takes a request's stream out of [`CallStreams`] when it ends.
struct Unregister {
    calls: Arc<CallStreams>,
    key: (String, String),
}

impl Drop for Unregister {
    fn drop(&mut self) {
        self.calls.open.remove(&self.key);
    }
}

/// The `Mcp-Session-Id` of the session an `initialize` opens (or restores), in the
/// request's extensions.
#[derive(Clone, Debug)]
pub struct SessionKey(pub SessionId);

/// Why the tagged manager failed: rmcp's own reasons, or the store's when an answer
/// could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum TaggedError {
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    #[error("the answer could not be passed to the replica that asked: {0}")]
    Store(#[from] StoreError),
}

impl Tagged {
    pub fn new(
        inner: Arc<LocalSessionManager>,
        shared: Option<&Arc<Shared>>,
        calls: Arc<CallStreams>,
    ) -> Self {
        let cluster = shared.map(|s| (Arc::clone(s), Arc::from(s.pg.replica())));
        Self {
            inner,
            cluster,
            calls,
            retiring: DashMap::new(),
        }
    }

    /// Closes rmcp's copy of session `id`, which goes on without it
    /// (`Passthrough::hibernate`), and waits, at most `limit`, for the copy's worker to
    /// end: its last act is to close the session by id, which would close a copy rmcp
    /// restored in its place by then. `false`: the worker did not end within `limit`.
    pub async fn retire(&self, id: &SessionId, limit: Duration) -> bool {
        let (tx, ended) = tokio::sync::oneshot::channel();
        self.retiring.insert(id.to_string(), tx);
        let _ = self.inner.close_session(id).await;
        let ended = tokio::time::timeout(limit, ended).await.is_ok();
        self.retiring.remove(id.as_ref());
        ended
    }

    /// `message` with a request's id, and its event id, tagged with this replica's id.
    fn tag(replica: Option<&Arc<str>>, mut message: ServerSseMessage) -> ServerSseMessage {
        let Some(replica) = replica else {
            return message;
        };
        if let Some(event) = &mut message.event_id {
            *event = format!("{event}{EVENT_TAG}{replica}");
        }
        let tagged = |id: &NumberOrString| NumberOrString::String(format!("{replica}:{id}").into());
        let retagged = match message.message.as_deref() {
            Some(JsonRpcMessage::Request(request)) => {
                let mut request = request.clone();
                request.id = tagged(&request.id);
                Some(JsonRpcMessage::Request(request))
            }
            // The server's cancellation of a request it sent names it as the client saw it.
            Some(JsonRpcMessage::Notification(n)) => match &n.notification {
                ServerNotification::CancelledNotification(c) => {
                    c.params.request_id.as_ref().map(|id| {
                        let mut n = n.clone();
                        if let ServerNotification::CancelledNotification(c) = &mut n.notification {
                            c.params.request_id = Some(tagged(id));
                        }
                        JsonRpcMessage::Notification(n)
                    })
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(retagged) = retagged {
            message.message = Some(Arc::new(retagged));
        }
        message
    }

    fn tagged<S: Stream<Item = ServerSseMessage>>(
        &self,
        stream: S,
    ) -> impl Stream<Item = ServerSseMessage> + use<S> {
        let replica = self.cluster.as_ref().map(|(_, r)| Arc::clone(r));
        stream.map(move |m| Self::tag(replica.as_ref(), m))
    }
}

/// What separates an SSE event's id (rmcp's) from the replica that sent it.
const EVENT_TAG: char = '@';

/// The event id a replica sent and the replica (`None`: not a tagged event id): a
/// `Last-Event-ID` names the replica holding the stream to resume.
pub fn untag_event(id: &str) -> Option<(&str, &str)> {
    let (event, replica) = id.rsplit_once(EVENT_TAG)?;
    (!event.is_empty() && !replica.is_empty()).then_some((event, replica))
}

/// rmcp's stream of a request, with what was sent aside for it ([`CallStreams`]): an
/// aside message goes first whenever both have one (one sent before the request's
/// answer comes before it), and the stream ends with rmcp's, after what is left aside.
struct WithAside<S> {
    inner: std::pin::Pin<Box<S>>,
    aside: Option<(tokio::sync::mpsc::Receiver<ServerSseMessage>, Unregister)>,
    /// rmcp's message, held while an aside one goes first.
    held: Option<ServerSseMessage>,
    ended: bool,
}

impl<S: Stream<Item = ServerSseMessage>> Stream for WithAside<S> {
    type Item = ServerSseMessage;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ServerSseMessage>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some((rx, _)) = &mut this.aside
            && let Poll::Ready(Some(m)) = rx.poll_recv(cx)
        {
            return Poll::Ready(Some(m));
        }
        if let Some(m) = this.held.take() {
            return Poll::Ready(Some(m));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(m)) => match this.aside.as_mut().map(|(rx, _)| rx.try_recv()) {
                Some(Ok(early)) => {
                    this.held = Some(m);
                    Poll::Ready(Some(early))
                }
                _ => Poll::Ready(Some(m)),
            },
            Poll::Ready(None) => {
                this.ended = true;
                match this.aside.as_mut().map(|(rx, _)| rx.try_recv()) {
                    Some(Ok(left)) => Poll::Ready(Some(left)),
                    _ => Poll::Ready(None),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn with_aside<S>(
    inner: S,
    aside: Option<(tokio::sync::mpsc::Receiver<ServerSseMessage>, Unregister)>,
) -> WithAside<S> {
    WithAside {
        inner: Box::pin(inner),
        aside,
        held: None,
        ended: false,
    }
}

/// The replica a tagged id names and the id it sent (`None`: not a tagged id).
fn untag(id: &NumberOrString) -> Option<(&str, i64)> {
    let NumberOrString::String(id) = id else {
        return None;
    };
    let (replica, n) = id.rsplit_once(':')?;
    let n = n.parse().ok()?;
    (!replica.is_empty()).then_some((replica, n))
}

impl SessionManager for Tagged {
    type Error = TaggedError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        Ok(self.inner.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        mut message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        // The handler learns its session's id from its first message (rmcp tells it
        // only with later requests' headers, which may all reach other replicas).
        message.insert_extension(SessionKey(Arc::clone(id)));
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let closed = self.inner.close_session(id).await;
        // A retired copy's worker, ending (see `retire`).
        if let Some((_, ended)) = self.retiring.remove(id.as_ref()) {
            let _ = ended.send(());
        }
        Ok(closed?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let request = match &message {
            JsonRpcMessage::Request(r) => Some(request_key(&r.id)),
            _ => None,
        };
        // Registered before rmcp sees the request: the handler may send at once.
        let aside = request.map(|request| {
            let (tx, rx) = tokio::sync::mpsc::channel(ASIDE_CAPACITY);
            let key = (id.to_string(), request);
            self.calls.open.insert(key.clone(), tx);
            let unregister = Unregister {
                calls: Arc::clone(&self.calls),
                key,
            };
            (rx, unregister)
        });
        let inner = self.inner.create_stream(id, message).await?;
        Ok(self.tagged(with_aside(inner, aside)))
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        mut message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        if let Some((shared, me)) = &self.cluster {
            let slot = match &mut message {
                JsonRpcMessage::Response(r) => Some(&mut r.id),
                JsonRpcMessage::Error(e) => e.id.as_mut(),
                _ => None,
            };
            if let Some(slot) = slot
                && let Some((replica, n)) = untag(slot)
            {
                let replica = replica.to_string();
                *slot = NumberOrString::Number(n);
                if replica != **me {
                    let body = serde_json::to_string(&message).expect("a message serializes");
                    if !shared.pg.relay_answer(&replica, id, &body).await? {
                        tracing::debug!(session = %id, %replica,
                            "a client's answer for a replica that is gone is dropped");
                    }
                    return Ok(());
                }
            }
        }
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.tagged(self.inner.create_standalone_stream(id).await?))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.tagged(self.inner.resume(id, last_event_id).await?))
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(self.inner.restore_session(id).await?)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change is answered once every peer said it followed this very change, and not
    /// on the word about another one; a silent peer holds it [`FOLLOW_WAIT`], no more.
    #[tokio::test(start_paused = true)]
    async fn a_change_waits_for_every_peer_to_follow_it_and_no_longer_than_its_bound() {
        use crate::store::{Change, postgres::Event};
        let ack = |token: u64| Ack {
            to: "a".into(),
            token,
        };
        let followed = |by: &str, token: u64| {
            Event::Change(Change::Followed {
                by: by.into(),
                ack: ack(token),
            })
        };
        let (tx, _) = tokio::sync::broadcast::channel(16);
        let peers = || vec!["b".to_string(), "c".to_string()];
        let start = tokio::time::Instant::now();
        let followers = Followers {
            news: tx.subscribe(),
            peers: peers(),
            ack: ack(1),
        };
        let mut waiting = tokio::spawn(followers.wait("s1"));
        for event in [
            followed("b", 1),
            // Another change's word (an earlier one of the same session, a concurrent
            // one, another replica's) is not this one's.
            followed("c", 2),
            Event::Change(Change::Followed {
                by: "c".into(),
                ack: Ack {
                    to: "z".into(),
                    token: 1,
                },
            }),
            Event::Change(Change::SessionsEnded {
                ids: vec!["s1".into()],
                ack: Some(ack(1)),
            }),
            Event::Resync,
        ] {
            tx.send(event).expect("a receiver");
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(!waiting.is_finished(), "answered before c followed");
        }
        tx.send(followed("c", 1)).expect("a receiver");
        (&mut waiting).await.expect("the wait ends");
        assert!(start.elapsed() < FOLLOW_WAIT, "{:?}", start.elapsed());

        // c never says it: answered at the bound.
        let start = tokio::time::Instant::now();
        let followers = Followers {
            news: tx.subscribe(),
            peers: peers(),
            ack: ack(3),
        };
        let waiting = followers.wait("s3");
        tx.send(followed("b", 3)).expect("a receiver");
        waiting.await;
        assert_eq!(start.elapsed(), FOLLOW_WAIT);
        // No peers (a lone replica, or the only one alive): at once.
        let start = tokio::time::Instant::now();
        let followers = Followers {
            news: tx.subscribe(),
            peers: Vec::new(),
            ack: ack(4),
        };
        followers.wait("s4").await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn a_tagged_id_names_its_replica_and_the_id_it_sent() {
        let tagged = NumberOrString::String("0b1c-2d:17".into());
        assert_eq!(untag(&tagged), Some(("0b1c-2d", 17)));
        for plain in [
            NumberOrString::Number(17),
            NumberOrString::String("17".into()),
            NumberOrString::String(":17".into()),
            NumberOrString::String("a:b".into()),
        ] {
            assert_eq!(untag(&plain), None, "{plain:?}");
        }
    }

    #[test]
    fn only_requests_are_tagged_and_only_in_a_cluster() {
        let request: ServerJsonRpcMessage = serde_json::from_value(serde_json::json!(
            {"jsonrpc": "2.0", "id": 3, "method": "roots/list"}
        ))
        .expect("a request");
        let response: ServerJsonRpcMessage = serde_json::from_value(serde_json::json!(
            {"jsonrpc": "2.0", "id": 3, "result": {}}
        ))
        .expect("a response");
        let sse = |m: &ServerJsonRpcMessage| {
            let mut e = ServerSseMessage::default();
            e.message = Some(Arc::new(m.clone()));
            e
        };
        let id_of = |e: ServerSseMessage| {
            serde_json::to_value(&*e.message.expect("a message")).expect("json")["id"].clone()
        };
        let me: Arc<str> = Arc::from("replica-a");
        assert_eq!(
            id_of(Tagged::tag(Some(&me), sse(&request))),
            serde_json::json!("replica-a:3")
        );
        let mut event = sse(&response);
        event.event_id = Some("0/4".into());
        let tagged = Tagged::tag(Some(&me), event.clone());
        assert_eq!(tagged.event_id.as_deref(), Some("0/4@replica-a"));
        assert_eq!(untag_event("0/4@replica-a"), Some(("0/4", "replica-a")));
        assert_eq!(untag_event("0/4"), None);
        assert_eq!(Tagged::tag(None, event).event_id.as_deref(), Some("0/4"));
        assert_eq!(
            id_of(Tagged::tag(Some(&me), sse(&response))),
            serde_json::json!(3)
        );
        assert_eq!(
            id_of(Tagged::tag(None, sse(&request))),
            serde_json::json!(3)
        );
    }
}
