//! What flows back from a backend while one of its requests is in flight: progress,
//! log messages, and server-to-client requests (sampling, elicitation, roots). The
//! upstream session's client handler ([`UpstreamClient`]) finds the downstream call a
//! message belongs to (by the upstream request's id, which rmcp records as the stream it
//! arrived on, or by its progress token) and hands it to that call's task over a
//! channel. The call's task sends it downstream from inside the downstream request's
//! own task, so it lands on that request's stream and nowhere else.
//!
//! Invariant: a message from a backend reaches only the call that caused it; one whose
//! call never claims it is dropped after a few seconds.

use std::sync::{Arc, Mutex};

use rmcp::{
    ErrorData,
    model::{
        ClientResult, LoggingMessageNotificationParam, ProgressNotificationParam, ProgressToken,
        RequestId, ServerRequest,
    },
    service::InboundStreamOrigin,
};
use tokio::sync::{mpsc, oneshot};

use crate::vocab::FastMap;

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

/// Which call a message that arrived before its call was registered belongs to.
pub(super) enum Early {
    Id(RequestId),
    Token(ProgressToken),
    Unassociated,
}

/// The calls in flight on one upstream session that want messages relayed.
#[derive(Default)]
pub struct Relays {
    by_id: Mutex<FastMap<RequestId, mpsc::Sender<RelayMsg>>>,
    by_token: Mutex<FastMap<ProgressToken, RequestId>>,
    /// Calls whose client declared none of sampling, elicitation and roots: a request
    /// that came outside any stream (a stdio server's) is never theirs.
    mute: Mutex<std::collections::HashSet<RequestId, crate::vocab::Hasher>>,
    /// Messages that beat their call's registration (a fast backend answers before
    /// `send` returns); claimed by `register`, dropped after a few seconds.
    early: Mutex<Vec<(Early, RelayMsg, std::time::Instant)>>,
    /// Every call on this session comes from one client (a client's own session), so a
    /// message that arrived outside any request's stream still has one right recipient.
    single_client: bool,
    /// That client, for messages that arrive when none of its calls is in flight (a log
    /// line that trails the result on another stream): sent on its standalone stream.
    owner: Option<Arc<dyn super::ClientLink>>,
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
        self.relays.lock_mute().remove(&self.id);
        self.relays.lock_tokens().remove(&self.token);
    }
}

impl Relays {
    fn lock_ids(&self) -> std::sync::MutexGuard<'_, FastMap<RequestId, mpsc::Sender<RelayMsg>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, FastMap<ProgressToken, RequestId>> {
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_mute(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashSet<RequestId, crate::vocab::Hasher>> {
        self.mute.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        self: &Arc<Self>,
        id: RequestId,
        token: ProgressToken,
        tx: mpsc::Sender<RelayMsg>,
    ) -> RelayGuard {
        self.register_call(id, token, tx, true)
    }

    /// [`Self::register`], saying whether the call's client may be asked anything
    /// (declared sampling, elicitation or roots).
    pub fn register_call(
        self: &Arc<Self>,
        id: RequestId,
        token: ProgressToken,
        tx: mpsc::Sender<RelayMsg>,
        may_ask: bool,
    ) -> RelayGuard {
        if !may_ask {
            self.lock_mute().insert(id.clone());
        }
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

    pub(super) fn for_token(&self, token: &ProgressToken) -> Option<mpsc::Sender<RelayMsg>> {
        let id = self.lock_tokens().get(token).cloned()?;
        self.for_id(&id)
    }

    /// Relays for calls that all come from one client.
    pub fn for_one_client(owner: Arc<dyn super::ClientLink>) -> Self {
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
        self.find_origin(extensions, false)
    }

    /// [`Self::for_origin`]; with `asking`, a request's: outside any stream, it goes to
    /// the only call in flight whose client may be asked.
    fn find_origin(
        &self,
        extensions: &rmcp::model::Extensions,
        asking: bool,
    ) -> Option<mpsc::Sender<RelayMsg>> {
        if let Some(InboundStreamOrigin::OutboundRequest(id)) =
            extensions.get::<InboundStreamOrigin>()
        {
            if let Some(tx) = self.for_id(id) {
                return Some(tx);
            }
            // It came on a request's own stream: it is that request's (finished, or not
            // registered yet), never another client's call that happens to be in flight.
            if !self.single_client {
                return None;
            }
        }
        let ids = self.lock_ids();
        if self.single_client && !ids.is_empty() {
            return ids.values().next().cloned();
        }
        if asking {
            let mute = self.lock_mute();
            let mut may = ids.iter().filter(|(id, _)| !mute.contains(*id));
            return match (may.next(), may.next()) {
                (Some((_, tx)), None) => Some(tx.clone()),
                _ => None,
            };
        }
        if ids.len() == 1 {
            return ids.values().next().cloned();
        }
        None
    }

    /// Sends a message to the call `find` names, or keeps it until that call registers.
    pub(super) fn deliver_or_hold(
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
    pub(super) fn deliver(&self, extensions: &rmcp::model::Extensions, msg: RelayMsg) {
        if let (Some(owner), RelayMsg::Log(params)) = (&self.owner, &msg)
            && self.lock_ids().is_empty()
        {
            let (owner, params) = (Arc::clone(owner), params.clone());
            tokio::spawn(async move { owner.log(params).await });
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
    pub(super) async fn ask(
        &self,
        extensions: &rmcp::model::Extensions,
        request: ServerRequest,
    ) -> Result<ClientResult, ErrorData> {
        // The request may beat its call's registration by a moment.
        let mut tx = self.find_origin(extensions, true);
        for _ in 0..50 {
            if tx.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            tx = self.find_origin(extensions, true);
        }
        let tx = tx.ok_or_else(|| {
            ErrorData::internal_error(
                "the gateway cannot tell which client request this belongs to (send it on the stream of the request that caused it; a stdio server's requests are relayed only while one call that may be asked is in flight)",
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

#[cfg(test)]
mod tests {
    //! Matching what a backend sends during a call to that call: by the upstream request
    //! id of the stream it came on, by progress token, and messages that beat their
    //! call's registration, claimed when it registers.

    use std::time::Duration;

    use rmcp::model::{ListRootsRequest, ListRootsResult, NumberOrString, Root};
    use serde_json::json;

    use super::*;

    fn id(n: i64) -> RequestId {
        NumberOrString::Number(n)
    }

    fn token(t: &str) -> ProgressToken {
        ProgressToken(NumberOrString::String(t.into()))
    }

    /// Extensions as rmcp sets them on a message that came on `origin`'s stream.
    fn on_stream_of(origin: Option<i64>) -> rmcp::model::Extensions {
        let mut extensions = rmcp::model::Extensions::new();
        extensions.insert(match origin {
            Some(n) => InboundStreamOrigin::OutboundRequest(id(n)),
            None => InboundStreamOrigin::Unassociated,
        });
        extensions
    }

    fn log(text: &str) -> RelayMsg {
        RelayMsg::Log(
            serde_json::from_value(json!({"level": "info", "data": text})).expect("log params"),
        )
    }

    fn progress(t: &str, n: u32) -> RelayMsg {
        RelayMsg::Progress(
            serde_json::from_value(json!({"progressToken": t, "progress": n}))
                .expect("progress params"),
        )
    }

    /// What a call's channel holds now, as short strings.
    fn drain(rx: &mut mpsc::Receiver<RelayMsg>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            out.push(match msg {
                RelayMsg::Log(l) => format!("log {}", l.data.as_str().unwrap_or_default()),
                RelayMsg::Progress(p) => format!("progress {}", p.progress),
                RelayMsg::StreamClosed(_) => "closed".into(),
                RelayMsg::Request(..) => "request".into(),
            });
        }
        out
    }

    /// A call registered as upstream request `n` with progress token `t`.
    fn call(relays: &Arc<Relays>, n: i64, t: &str) -> (RelayGuard, mpsc::Receiver<RelayMsg>) {
        let (tx, rx) = mpsc::channel(16);
        (relays.register(id(n), token(t), tx), rx)
    }

    /// Progress `n` for token `t`, as the client handler passes it on.
    fn progress_for(relays: &Relays, t: &str, n: u32) {
        let key = token(t);
        relays.deliver_or_hold(Early::Token(key.clone()), progress(t, n), |r| {
            r.for_token(&key)
        });
    }

    #[test]
    fn a_message_goes_to_the_call_whose_stream_carried_it() {
        let relays = Arc::new(Relays::default());
        let (_a, mut a) = call(&relays, 1, "ta");
        let (_b, mut b) = call(&relays, 2, "tb");
        relays.deliver(&on_stream_of(Some(2)), log("for b"));
        relays.deliver(&on_stream_of(Some(1)), log("for a"));
        relays.notify(&id(2), RelayMsg::StreamClosed(None));
        assert_eq!(drain(&mut a), ["log for a"]);
        assert_eq!(drain(&mut b), ["log for b", "closed"]);
    }

    #[test]
    fn progress_goes_to_the_call_of_its_token() {
        let relays = Arc::new(Relays::default());
        let (_a, mut a) = call(&relays, 1, "ta");
        let (_b, mut b) = call(&relays, 2, "tb");
        progress_for(&relays, "tb", 1);
        progress_for(&relays, "ta", 2);
        progress_for(&relays, "tb", 3);
        assert_eq!(drain(&mut a), ["progress 2"]);
        assert_eq!(drain(&mut b), ["progress 1", "progress 3"]);
    }

    #[test]
    fn messages_that_beat_their_call_are_claimed_when_it_registers() {
        let relays = Arc::new(Relays::default());
        relays.deliver(&on_stream_of(Some(5)), log("early for 5"));
        progress_for(&relays, "t6", 1);
        // Another call registering takes neither.
        let (_other, mut other) = call(&relays, 7, "t7");
        assert!(drain(&mut other).is_empty());
        let (_five, mut five) = call(&relays, 5, "t5");
        assert_eq!(drain(&mut five), ["log early for 5"]);
        let (_six, mut six) = call(&relays, 6, "t6");
        assert_eq!(drain(&mut six), ["progress 1"]);
        assert!(drain(&mut other).is_empty());
    }

    #[test]
    fn on_a_shared_session_an_unattributable_message_is_never_guessed() {
        let relays = Arc::new(Relays::default());
        // No call in flight: dropped, not held for whichever call comes next.
        relays.deliver(&on_stream_of(None), log("nobody's"));
        let (a_guard, mut a) = call(&relays, 1, "ta");
        assert!(drain(&mut a).is_empty());
        // Two calls in flight: nobody's either.
        let (_b, mut b) = call(&relays, 2, "tb");
        relays.deliver(&on_stream_of(None), log("ambiguous"));
        assert!(drain(&mut a).is_empty() && drain(&mut b).is_empty());
        // One call in flight: it can only be that call's.
        drop(a_guard);
        relays.deliver(&on_stream_of(None), log("b's"));
        assert_eq!(drain(&mut b), ["log b's"]);
    }

    #[test]
    fn a_message_of_a_finished_request_never_reaches_another_call() {
        let relays = Arc::new(Relays::default());
        let (a_guard, _a) = call(&relays, 1, "ta");
        drop(a_guard);
        // Another client's call is the only one in flight now.
        let (_b, mut b) = call(&relays, 2, "tb");
        relays.deliver(&on_stream_of(Some(1)), log("a's late line"));
        assert!(drain(&mut b).is_empty(), "a's message went to b");
    }

    #[test]
    fn a_finished_call_is_unregistered() {
        let relays = Arc::new(Relays::default());
        let (a_guard, mut a) = call(&relays, 1, "ta");
        drop(a_guard);
        relays.notify(&id(1), RelayMsg::StreamClosed(None));
        progress_for(&relays, "ta", 1);
        assert!(drain(&mut a).is_empty());
        assert!(relays.lock_ids().is_empty() && relays.lock_tokens().is_empty());
    }

    #[test]
    fn on_a_single_clients_session_every_message_is_that_clients() {
        let relays = Arc::new(Relays {
            single_client: true,
            ..Relays::default()
        });
        relays.deliver(&on_stream_of(None), log("before any call"));
        let (_a, mut a) = call(&relays, 1, "ta");
        assert_eq!(drain(&mut a), ["log before any call"]);
        let (_b, mut b) = call(&relays, 2, "tb");
        relays.deliver(&on_stream_of(None), log("one of its calls"));
        assert_eq!(drain(&mut a).len() + drain(&mut b).len(), 1);
    }

    #[tokio::test]
    #[allow(deprecated)] // roots/list is deprecated by SEP-2577 but still relayed
    async fn a_server_request_is_asked_through_its_call_and_answered_back() {
        let relays = Arc::new(Relays::default());
        let (_other, mut other) = call(&relays, 1, "t1");
        // The request beats its call's registration by a moment.
        let asking = tokio::spawn({
            let relays = Arc::clone(&relays);
            async move {
                let request = ServerRequest::ListRootsRequest(ListRootsRequest {
                    method: Default::default(),
                    extensions: Default::default(),
                });
                relays.ask(&on_stream_of(Some(2)), request).await
            }
        });
        let (_mine, mut mine) = call(&relays, 2, "t2");
        let msg = tokio::time::timeout(Duration::from_secs(10), mine.recv())
            .await
            .expect("the request reaches its call")
            .expect("a message");
        let RelayMsg::Request(ServerRequest::ListRootsRequest(_), reply) = msg else {
            panic!("not the roots request");
        };
        let roots = ListRootsResult::new(vec![Root::new("file:///work")]);
        reply
            .send(Ok(ClientResult::ListRootsResult(roots.clone())))
            .unwrap_or_else(|_| panic!("the asker is waiting"));
        match asking.await.expect("ask task") {
            Ok(ClientResult::ListRootsResult(r)) => assert_eq!(r, roots),
            other => panic!("{other:?}"),
        }
        assert!(drain(&mut other).is_empty(), "the other call is not asked");
    }

    #[tokio::test]
    #[allow(deprecated)]
    async fn a_server_request_no_call_can_take_is_refused() {
        let relays = Arc::new(Relays::default());
        let (_a, _rx_a) = call(&relays, 1, "ta");
        let (_b, _rx_b) = call(&relays, 2, "tb");
        let request = ServerRequest::ListRootsRequest(ListRootsRequest {
            method: Default::default(),
            extensions: Default::default(),
        });
        let refused = relays
            .ask(&on_stream_of(None), request)
            .await
            .expect_err("two calls in flight: whose?");
        assert!(
            refused.message.contains("cannot tell which client request"),
            "{refused:?}"
        );
    }

    #[tokio::test]
    #[allow(deprecated)]
    async fn outside_any_stream_a_request_goes_to_the_one_call_that_may_be_asked() {
        // A stdio server's session: nothing says which call a request belongs to.
        let relays = Arc::new(Relays::default());
        let (tx_plain, mut plain) = mpsc::channel(8);
        let _plain = relays.register_call(id(1), token("t1"), tx_plain, false);
        let (_capable, mut capable) = call(&relays, 2, "t2");
        let asking = tokio::spawn({
            let relays = Arc::clone(&relays);
            async move {
                let request = ServerRequest::ListRootsRequest(ListRootsRequest {
                    method: Default::default(),
                    extensions: Default::default(),
                });
                relays.ask(&on_stream_of(None), request).await
            }
        });
        let msg = tokio::time::timeout(Duration::from_secs(10), capable.recv())
            .await
            .expect("the capable call is asked")
            .expect("a message");
        let RelayMsg::Request(_, reply) = msg else {
            panic!("not the request");
        };
        let roots = ListRootsResult::new(vec![Root::new("file:///work")]);
        let _ = reply.send(Ok(ClientResult::ListRootsResult(roots)));
        assert!(asking.await.expect("ask task").is_ok());
        assert!(
            drain(&mut plain).is_empty(),
            "a call that may not be asked is not"
        );
        // Two that may be asked: whose? Nobody's.
        let (_again, _rx) = call(&relays, 3, "t3");
        let request = ServerRequest::ListRootsRequest(ListRootsRequest {
            method: Default::default(),
            extensions: Default::default(),
        });
        assert!(relays.ask(&on_stream_of(None), request).await.is_err());
    }
}
