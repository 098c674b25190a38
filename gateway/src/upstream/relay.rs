//! What flows back from a backend while one of its requests is in flight: progress,
//! log messages, and server-to-client requests (sampling, elicitation, roots). The
//! upstream session's client handler ([`UpstreamClient`]) finds the downstream call a
//! message belongs to (by the upstream request's id, which rmcp records as the stream it
//! arrived on, or by its progress token) and hands it to that call's task over a
//! channel. The call's task sends it downstream from inside the downstream request's
//! own task, so it lands on that request's stream and nowhere else.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        ClientConfig, ClientResult, CreateMessageRequest, CreateMessageRequestParams,
        CreateMessageResult, ElicitRequest, ElicitRequestParams, ElicitResult, ListRootsRequest,
        ListRootsResult, LoggingMessageNotificationParam, ProgressNotificationParam, ProgressToken,
        RequestId, ResourceUpdatedNotificationParam, ServerRequest,
    },
    service::{InboundStreamOrigin, NotificationContext, RequestContext},
};
use tokio::sync::{mpsc, oneshot};

use super::Instance;

/// A message for the downstream call that caused it.
pub enum RelayMsg {
    Progress(ProgressNotificationParam),
    Log(LoggingMessageNotificationParam),
    /// The backend closed the request's SSE stream mid-call, with this reconnection
    /// hint, and rmcp is resuming it (SEP-1699; see `resume`).
    StreamClosed(Option<std::time::Duration>),
    /// A server-to-client request; the answer goes back through the sender.
    Request(
        ServerRequest,
        oneshot::Sender<Result<ClientResult, ErrorData>>,
    ),
}

/// The calls in flight on one upstream session that want messages relayed.
/// Which call a message that arrived before its call was registered belongs to.
enum Early {
    Id(RequestId),
    Token(ProgressToken),
    Unassociated,
}

#[derive(Default)]
pub struct Relays {
    by_id: Mutex<HashMap<RequestId, mpsc::Sender<RelayMsg>>>,
    by_token: Mutex<HashMap<ProgressToken, RequestId>>,
    /// Messages that beat their call's registration (a fast backend answers before
    /// `send` returns); claimed by `register`, dropped after a few seconds.
    early: Mutex<Vec<(Early, RelayMsg, std::time::Instant)>>,
    /// Every call on this session comes from one client (a client's own session), so a
    /// message that arrived outside any request's stream still has one right recipient.
    single_client: bool,
    /// That client, for messages that arrive when none of its calls is in flight (a log
    /// line that trails the result on another stream): sent on its standalone stream.
    owner: Option<rmcp::Peer<rmcp::RoleServer>>,
}

/// Unregisters a call's relay when the call ends, however it ends.
pub struct RelayGuard {
    relays: Arc<Relays>,
    id: RequestId,
    token: ProgressToken,
}

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.relays.lock_ids().remove(&self.id);
        self.relays.lock_tokens().remove(&self.token);
    }
}

impl Relays {
    fn lock_ids(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, mpsc::Sender<RelayMsg>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<ProgressToken, RequestId>> {
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        self: &Arc<Self>,
        id: RequestId,
        token: ProgressToken,
        tx: mpsc::Sender<RelayMsg>,
    ) -> RelayGuard {
        // Lock order everywhere: `early`, then the maps. Holding `early` while the call
        // becomes findable means a message is either found or held, never lost between.
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        let only = {
            let mut ids = self.lock_ids();
            ids.insert(id.clone(), tx.clone());
            ids.len() == 1
        };
        self.lock_tokens().insert(token.clone(), id.clone());
        let mut kept = Vec::new();
        for (key, msg, at) in early.drain(..) {
            let mine = match &key {
                Early::Id(i) => *i == id,
                Early::Token(t) => *t == token,
                Early::Unassociated => only || self.single_client,
            };
            if mine {
                let _ = tx.try_send(msg);
            } else {
                kept.push((key, msg, at));
            }
        }
        *early = kept;
        RelayGuard {
            relays: Arc::clone(self),
            id,
            token,
        }
    }

    fn for_id(&self, id: &RequestId) -> Option<mpsc::Sender<RelayMsg>> {
        self.lock_ids().get(id).cloned()
    }

    /// Sends `msg` to the call in flight as upstream request `id`, if there is one.
    pub fn notify(&self, id: &RequestId, msg: RelayMsg) {
        if let Some(tx) = self.for_id(id) {
            let _ = tx.try_send(msg);
        }
    }

    fn for_token(&self, token: &ProgressToken) -> Option<mpsc::Sender<RelayMsg>> {
        let id = self.lock_tokens().get(token).cloned()?;
        self.for_id(&id)
    }

    /// Relays for calls that all come from one client.
    pub fn for_one_client(owner: rmcp::Peer<rmcp::RoleServer>) -> Self {
        Self {
            single_client: true,
            owner: Some(owner),
            ..Self::default()
        }
    }

    /// The call a message belongs to: the request whose stream carried it; failing that
    /// (some servers send everything on the standalone stream), the only call in
    /// flight, or any call of a single-client session. Otherwise nobody: a message is
    /// never guessed onto another client's stream.
    fn for_origin(&self, extensions: &rmcp::model::Extensions) -> Option<mpsc::Sender<RelayMsg>> {
        if let Some(InboundStreamOrigin::OutboundRequest(id)) =
            extensions.get::<InboundStreamOrigin>()
            && let Some(tx) = self.for_id(id)
        {
            return Some(tx);
        }
        let ids = self.lock_ids();
        if ids.len() == 1 || (self.single_client && !ids.is_empty()) {
            return ids.values().next().cloned();
        }
        None
    }

    /// Sends a message to the call `find` names, or keeps it until that call registers.
    fn deliver_or_hold(
        &self,
        key: Early,
        msg: RelayMsg,
        find: impl FnOnce(&Self) -> Option<mpsc::Sender<RelayMsg>>,
    ) {
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = find(self) {
            drop(early);
            let _ = tx.try_send(msg);
            return;
        }
        let now = std::time::Instant::now();
        early.retain(|(_, _, at)| now.duration_since(*at) < std::time::Duration::from_secs(5));
        if early.len() < 256 {
            early.push((key, msg, now));
        }
    }

    fn origin_key(extensions: &rmcp::model::Extensions) -> Early {
        match extensions.get::<InboundStreamOrigin>() {
            Some(InboundStreamOrigin::OutboundRequest(id)) => Early::Id(id.clone()),
            _ => Early::Unassociated,
        }
    }

    /// Delivers a notification to its call, or holds it until the call registers.
    fn deliver(&self, extensions: &rmcp::model::Extensions, msg: RelayMsg) {
        if let (Some(owner), RelayMsg::Log(params)) = (&self.owner, &msg)
            && self.lock_ids().is_empty()
        {
            let (owner, params) = (owner.clone(), params.clone());
            tokio::spawn(async move {
                let _ = owner.notify_logging_message(params).await;
            });
            return;
        }
        let key = Self::origin_key(extensions);
        if matches!(key, Early::Unassociated) && !self.single_client {
            // On a shared session an unattributable message is never guessed onto a
            // later call, which may be another client's.
            if let Some(tx) = self.for_origin(extensions) {
                let _ = tx.try_send(msg);
            }
            return;
        }
        self.deliver_or_hold(key, msg, |r| r.for_origin(extensions));
    }

    /// Asks the downstream client (through the call that caused it) and waits.
    async fn ask(
        &self,
        extensions: &rmcp::model::Extensions,
        request: ServerRequest,
    ) -> Result<ClientResult, ErrorData> {
        // The request may beat its call's registration by a moment.
        let mut tx = self.for_origin(extensions);
        for _ in 0..50 {
            if tx.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            tx = self.for_origin(extensions);
        }
        let tx = tx.ok_or_else(|| {
            ErrorData::internal_error(
                "the gateway has no client request this belongs to (it must be sent on the stream of the request that caused it)",
                None,
            )
        })?;
        let (reply, answer) = oneshot::channel();
        tx.send(RelayMsg::Request(request, reply))
            .await
            .map_err(|_| ErrorData::internal_error("the client's request has ended", None))?;
        answer
            .await
            .map_err(|_| ErrorData::internal_error("the client's request has ended", None))?
    }
}

/// The gateway's client-side handler for one upstream session.
pub struct UpstreamClient {
    pub(super) info: ClientConfig,
    pub(super) instance: Weak<Instance>,
    pub(super) relays: Arc<Relays>,
    /// Where this session's pass-through calls go.
    pub(super) raw: Arc<super::raw::RawTarget>,
}

fn unexpected(what: &str) -> ErrorData {
    ErrorData::internal_error(
        format!("the client answered {what} with an unexpected result"),
        None,
    )
}

impl ClientHandler for UpstreamClient {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let token = params.progress_token.clone();
        self.relays.deliver_or_hold(
            Early::Token(token.clone()),
            RelayMsg::Progress(params),
            |r| r.for_token(&token),
        );
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        context: NotificationContext<RoleClient>,
    ) {
        self.relays
            .deliver(&context.extensions, RelayMsg::Log(params));
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params));
        match self.relays.ask(&context.extensions, request).await? {
            ClientResult::CreateMessageResult(r) => Ok(*r),
            _ => Err(unexpected("sampling/createMessage")),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        match self.relays.ask(&context.extensions, request).await? {
            ClientResult::ElicitResult(r) => Ok(r),
            _ => Err(unexpected("elicitation/create")),
        }
    }

    async fn list_roots(
        &self,
        context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        let request = ServerRequest::ListRootsRequest(ListRootsRequest {
            method: Default::default(),
            extensions: Default::default(),
        });
        match self.relays.ask(&context.extensions, request).await? {
            ClientResult::ListRootsResult(r) => Ok(r),
            _ => Err(unexpected("roots/list")),
        }
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(i) = self.instance.upgrade() {
            i.resource_updated(&params.uri);
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relist("tools");
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relist("prompts");
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relist("resources");
    }
}

impl UpstreamClient {
    fn relist(&self, what: &str) {
        if let Some(i) = self.instance.upgrade() {
            // Debug only: a backend may announce changes in a loop (re-lists are
            // coalesced, at most one a second).
            tracing::debug!(service = %i.service, instance = %i.url, "upstream announced {what}/list_changed");
            i.request_relist();
        }
    }
}
