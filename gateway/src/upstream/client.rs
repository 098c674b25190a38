//! The gateway's client side of one upstream session: the rmcp `ClientHandler` that
//! receives a backend's notifications and requests and hands each to the call that
//! caused it (through `relay`), or to the session's pass-through calls (`raw`).
//! Invariant: nothing a backend sends reaches a client that did not cause it.

use std::sync::{Arc, Weak};

use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        ClientConfig, ClientResult, CreateMessageRequest, CreateMessageRequestParams,
        CreateMessageResult, ElicitRequest, ElicitRequestParams, ElicitResult, ListRootsRequest,
        ListRootsResult, LoggingMessageNotificationParam, ProgressNotificationParam,
        ResourceUpdatedNotificationParam, ServerRequest,
    },
    service::{NotificationContext, RequestContext},
};

use super::{
    Instance,
    relay::{Early, RelayMsg, Relays},
};

/// The gateway's client-side handler for one upstream session.
#[derive(Clone)]
pub struct UpstreamClient {
    pub(super) info: ClientConfig,
    pub(super) instance: Weak<Instance>,
    pub(super) relays: Arc<Relays>,
    /// Where this session's pass-through calls go (`None`: a stdio server's session,
    /// which only the typed path serves).
    pub(super) raw: Option<Arc<super::raw::RawTarget>>,
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
