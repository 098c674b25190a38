//! Multi round-trip requests (SEP-2322) for 2026-07-28 clients in front of backends
//! that ask during a call.
//!
//! A 2026-07-28 client has no session a backend's `sampling/createMessage`,
//! `elicitation/create` or `roots/list` could travel on: it expects an `input_required`
//! result naming what to answer, and retries its request with `inputResponses` and the
//! `requestState` it got. A 2025-era backend asks mid-call instead. The gateway runs
//! such a call in a task of its own ([`Rounds::start`]); each client request is one
//! *round* that waits for the call's next event: the answer (the round returns it), or
//! the backend's questions (the round returns them as `input_required`, and the call
//! waits, *parked*, holding the backend's requests open). The retry
//! ([`Rounds::resume`]) answers them and waits for the next event.
//!
//! `requestState` is sealed (HMAC, [`RequestStateCodec`]) with this process's key and
//! bound to the credential and the request (method, name, arguments): a tampered one,
//! one replayed by another credential or for another request, or one past
//! `input_timeout_ms` does not open. A parked call that nobody continues within
//! `input_timeout_ms` is cancelled: the backend's requests get an error and the call
//! `notifications/cancelled`. A call lives in one gateway process: in a cluster its
//! `requestState` names the replica holding it (`<replica>~<sealed>`), and a retry that
//! reaches another replica is passed there (`mcp.rs`); one whose replica has left is
//! refused with a clear error.
//!
//! Invariant: a requestState is sealed by the gateway and bound to its caller, method,
//! target and service registration; a state that does not open is refused, never
//! trusted.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rmcp::{
    ErrorData, Peer, RoleServer,
    model::{
        ClientCapabilities, ClientResult, CreateMessageResult, ElicitResult, InputRequest,
        InputRequests, InputRequiredResult, InputResponses, JsonObject, ListRootsResult,
        LoggingLevel, ProgressToken, RequestStateCodec, SealOptions, ServerRequest, ServerResult,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::upstream::relay::RelayMsg;

/// How long a round waits after a backend's request for another sent with it.
const GATHER_QUIET: Duration = Duration::from_millis(20);
/// The longest a round gathers a backend's requests before asking the client.
const GATHER_MAX: Duration = Duration::from_millis(100);
/// The most questions one round asks (more wait for the next round).
const MAX_QUESTIONS: usize = 16;

/// What the gateway answers a backend's request with.
type Reply = oneshot::Sender<Result<ClientResult, ErrorData>>;

/// Bounds and timing of the calls that wait for a client's input.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a parked call waits for the client's retry.
    pub timeout: Duration,
    /// Parked calls at once, in all.
    pub max: usize,
    /// Parked calls at once, per credential.
    pub max_per_credential: usize,
}

/// The calls of 2026-07-28 requests, and those of them waiting for their client's input.
pub struct Rounds {
    codec: RequestStateCodec,
    limits: Limits,
    next: AtomicU64,
    parked: Mutex<HashMap<u64, Arc<Call>>>,
    /// A cluster's replica: its id, prefixed to the `requestState` of a call parked here
    /// (`<replica>~<sealed>`), so a retry reaching another replica is passed here.
    replica: Option<String>,
}

/// What separates the replica holding a parked call from its sealed `requestState`.
const PARKED_ON: char = '~';

/// The replica a `requestState` says holds its parked call (`None`: any replica opens
/// it). Read before it is opened, to route the retry: the replica named opens it.
pub fn parked_on(state: &str) -> Option<&str> {
    state
        .split_once(PARKED_ON)
        .map(|(replica, _)| replica)
        .filter(|r| !r.is_empty())
}

/// One upstream call driven by its client's rounds.
struct Call {
    id: u64,
    /// The credential that started it, and the request it answers (see [`binding`]).
    binding: Vec<u8>,
    owner: Arc<str>,
    /// Bumped when a round parks the call and when a retry (or the timeout) claims it.
    round: AtomicU64,
    /// Cancels the upstream call (the backend gets `notifications/cancelled`).
    cancel: CancellationToken,
    live: tokio::sync::Mutex<Live>,
}

/// What a round works with; one round at a time holds it.
struct Live {
    /// Progress, log messages and requests the backend sends about the call.
    relays: mpsc::Receiver<RelayMsg>,
    /// The call's answer, once.
    done: oneshot::Receiver<Result<ServerResult, ErrorData>>,
    /// The backend's requests asked of the client and not answered yet, by key.
    pending: BTreeMap<String, (Kind, InputRequest, Reply)>,
    /// The questions of the round being built.
    questions: InputRequests,
    asked: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sampling,
    Elicitation,
    Roots,
}

impl Kind {
    fn method(self) -> &'static str {
        match self {
            Kind::Sampling => "sampling/createMessage",
            Kind::Elicitation => "elicitation/create",
            Kind::Roots => "roots/list",
        }
    }
}

/// What `requestState` carries.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum State {
    /// A call the gateway holds open (a 2025-era backend asked mid-call), and the round
    /// this state was issued for; in a cluster, the replica holding it (the prefix that
    /// routes the retry is not sealed: this is what is trusted).
    Parked {
        c: u64,
        r: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        p: Option<String>,
    },
    /// A 2026-07-28 backend's own `input_required`: the retry goes back to it, to the
    /// instance `a` picks (rendezvous affinity), with the backend's own state `u`.
    Upstream {
        a: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        u: Option<String>,
    },
}

/// Where a task the gateway handed out lives (see [`Rounds::seal_task`]): the service,
/// the rendezvous key that picks its instance, and the backend's own task id.
#[derive(Serialize, Deserialize)]
pub struct TaskRoute {
    #[serde(rename = "s")]
    pub service: String,
    /// The service's registration (owner, time) when the task was made.
    #[serde(rename = "r")]
    pub registration: String,
    #[serde(rename = "a")]
    pub affinity: String,
    #[serde(rename = "t")]
    pub task: String,
}

/// How long a task id the gateway handed out keeps opening.
const TASK_ID_TTL: Duration = Duration::from_secs(24 * 3600);

/// A `requestState` that opened (see [`Rounds::open`]).
pub enum Opened {
    /// A parked call's: continue it with [`Rounds::resume`].
    Parked(Parked),
    /// A backend's own: retry the request on the instance `affinity` picks, with the
    /// backend's `state` and the client's `inputResponses`.
    Upstream {
        affinity: String,
        state: Option<String>,
    },
}

/// The parked call a `requestState` names, and its round.
pub struct Parked {
    c: u64,
    r: u64,
}

/// The client side of one round: where its progress and log messages go, and what it
/// declared.
pub struct Round<'a> {
    pub peer: &'a Peer<RoleServer>,
    /// Cancelled when the client goes away (the whole call is then cancelled).
    pub ct: &'a CancellationToken,
    pub progress_token: Option<ProgressToken>,
    /// Log messages from this level up; none without one.
    pub log_level: Option<LoggingLevel>,
    pub capabilities: ClientCapabilities,
}

/// The bytes a `requestState` is bound to: the credential, the method, and what the
/// request names and passes (a retry repeats its original request; its arguments are
/// compared whatever the order of their keys).
pub fn binding(owner: &str, method: &str, target: &str, arguments: Option<&JsonObject>) -> Vec<u8> {
    let mut args = String::new();
    if let Some(arguments) = arguments {
        canonical(&Value::Object(arguments.clone()), &mut args);
    }
    // Each field with its length first: no field's text can pass for the next one's.
    let mut out = String::new();
    for field in [owner, method, target, &args] {
        out.push_str(&format!("{}:{field}", field.len()));
    }
    out.into_bytes()
}

/// `value` as JSON text with every object's keys sorted.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The single error every `requestState` that does not open gets (the codec's reasons
/// stay in the log).
fn not_ours() -> ErrorData {
    ErrorData::invalid_params(
        "requestState was not issued by this gateway for this credential and this request, or it has expired",
        None,
    )
}

impl Rounds {
    /// With `key` (a cluster's, the same on every replica: a `requestState` or task id
    /// any replica sealed opens on every other), else a key drawn now.
    pub fn new(limits: Limits, key: Option<[u8; 32]>) -> Self {
        let key = key.unwrap_or_else(|| {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            key
        });
        Self {
            codec: RequestStateCodec::new(key.to_vec()),
            limits,
            next: AtomicU64::new(1),
            parked: Mutex::new(HashMap::new()),
            replica: None,
        }
    }

    /// The rounds of replica `replica` of a cluster (see the field).
    pub fn in_cluster(mut self, replica: &str) -> Self {
        self.replica = Some(replica.to_string());
        self
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Call>>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls waiting for their client's input now.
    pub fn waiting(&self) -> usize {
        self.lock_parked().len()
    }

    /// Runs `work` (the upstream call: its backend's messages go to `relays`, and it
    /// stops when `cancel` fires) in a task of its own, and drives its first round.
    pub async fn start(
        self: &Arc<Self>,
        owner: Arc<str>,
        binding: Vec<u8>,
        round: Round<'_>,
        relays: mpsc::Receiver<RelayMsg>,
        cancel: CancellationToken,
        work: impl Future<Output = Result<ServerResult, ErrorData>> + Send + 'static,
    ) -> Result<ServerResult, ErrorData> {
        let (answer, done) = oneshot::channel();
        tokio::spawn(async move {
            let _ = answer.send(work.await);
        });
        let call = Arc::new(Call {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            binding,
            owner,
            round: AtomicU64::new(0),
            cancel,
            live: tokio::sync::Mutex::new(Live {
                relays,
                done,
                pending: BTreeMap::new(),
                questions: BTreeMap::new(),
                asked: 0,
            }),
        });
        let mut live = call.live.lock().await;
        self.drive(&call, &mut live, round).await
    }

    /// Opens a client's `requestState`: one this gateway sealed for `binding`, within
    /// `input_timeout_ms`, or refused.
    pub fn open(&self, binding: &[u8], state: &str) -> Result<Opened, ErrorData> {
        let gone = |replica: &str| {
            ErrorData::invalid_params(
                format!(
                    "the call this requestState continues was held by gateway replica {replica}, which has left the cluster: it is lost; send the request again without requestState"
                ),
                None,
            )
        };
        // A lone gateway prefixes nothing: such a state is simply not its own.
        let state = match (&self.replica, state.split_once(PARKED_ON)) {
            (Some(me), Some((replica, sealed))) if replica == me => sealed,
            (Some(_), Some((replica, _))) => return Err(gone(replica)),
            _ => state,
        };
        let state: State = self.codec.open_json_with(state, binding).map_err(|e| {
            tracing::debug!("requestState refused: {e}");
            not_ours()
        })?;
        Ok(match state {
            State::Parked { c, r, p } => {
                if p != self.replica {
                    return Err(match p {
                        Some(p) => gone(&p),
                        None => not_ours(),
                    });
                }
                Opened::Parked(Parked { c, r })
            }
            State::Upstream { a, u } => Opened::Upstream {
                affinity: a,
                state: u,
            },
        })
    }

    /// A 2026-07-28 backend's `input_required` as the client gets it: its questions
    /// as they are, its `requestState` sealed inside the gateway's own (bound to
    /// `binding`, naming the instance through `affinity`), so the retry comes back here
    /// and goes on to the same backend. A backend that keeps no state (it reads the
    /// answers afresh) gets none added: its retry is a new request like any other.
    pub fn seal_upstream(
        &self,
        binding: &[u8],
        affinity: &str,
        mut result: InputRequiredResult,
    ) -> Result<InputRequiredResult, ErrorData> {
        if result.request_state.is_none() {
            return Ok(result);
        }
        let state = State::Upstream {
            a: affinity.to_string(),
            u: result.request_state.take(),
        };
        result.request_state = Some(self.seal(&state, binding)?);
        Ok(result)
    }

    /// The task id a client gets for a backend's task (SEP-2663): sealed, bound to the
    /// credential that started it, naming where it lives.
    pub fn seal_task(&self, owner: &str, route: &TaskRoute) -> Result<String, ErrorData> {
        self.codec
            .seal_json_with(
                route,
                &SealOptions::new()
                    .associated_data(&binding(owner, "tasks", "", None))
                    .ttl(TASK_ID_TTL),
            )
            .map_err(|e| ErrorData::internal_error(format!("sealing a task id: {e}"), None))
    }

    /// Where the task `id` lives, if this gateway handed it to `owner`.
    pub fn open_task(&self, owner: &str, id: &str) -> Result<TaskRoute, ErrorData> {
        self.codec
            .open_json_with(id, &binding(owner, "tasks", "", None))
            .map_err(|e| {
                tracing::debug!("task id refused: {e}");
                ErrorData::invalid_params(
                    format!("unknown task: {id}"),
                    Some(serde_json::json!({ "taskId": id })),
                )
            })
    }

    fn seal(&self, state: &State, binding: &[u8]) -> Result<String, ErrorData> {
        self.codec
            .seal_json_with(
                state,
                &SealOptions::new()
                    .associated_data(binding)
                    .ttl(self.limits.timeout),
            )
            .map_err(|e| ErrorData::internal_error(format!("sealing requestState: {e}"), None))
    }

    /// Continues the parked call `state` names with the client's `responses`, and
    /// drives the next round. Anything wrong with the retry is refused before anything
    /// changes: the call stays parked, its questions open.
    pub async fn resume(
        self: &Arc<Self>,
        binding: &[u8],
        state: Parked,
        responses: Option<InputResponses>,
        round: Round<'_>,
    ) -> Result<ServerResult, ErrorData> {
        let call = self.lock_parked().get(&state.c).cloned().ok_or_else(|| {
            ErrorData::invalid_params(
                "the call this requestState continues is not here: it is over (answered, cancelled, or it waited longer than input_timeout_ms), or, in a cluster, it waits on the replica that asked (a call to a 2025-era backend is held where it started)",
                None,
            )
        })?;
        if call.binding != binding {
            return Err(not_ours());
        }
        let Ok(mut live) = call.live.try_lock() else {
            return Err(ErrorData::invalid_request(
                "another request is continuing this call already",
                None,
            ));
        };
        if call.round.load(Ordering::Acquire) != state.r {
            return Err(ErrorData::invalid_params(
                "requestState is from an earlier round of this call; use the latest",
                None,
            ));
        }
        let answers = answers(&live.pending, responses.unwrap_or_default())?;
        // Claimed: the timeout can no longer expire this round.
        if call
            .round
            .compare_exchange(state.r, state.r + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ErrorData::invalid_params(
                "the call this requestState continues is over (answered, cancelled, or it waited longer than input_timeout_ms)",
                None,
            ));
        }
        self.lock_parked().remove(&call.id);
        for (key, answer) in answers {
            if let Some((_, _, reply)) = live.pending.remove(&key) {
                let _ = reply.send(Ok(answer));
            }
        }
        if !live.pending.is_empty() {
            // Some questions went unanswered: asked again (SEP-2322 re-requests what is
            // missing rather than failing the request).
            live.questions = live
                .pending
                .iter()
                .map(|(key, (_, question, _))| (key.clone(), question.clone()))
                .collect();
            let mut abandon = Abandon {
                call: Some(Arc::clone(&call)),
            };
            let result = self.park(&call, &mut live)?;
            abandon.call = None;
            return Ok(ServerResult::InputRequiredResult(result));
        }
        self.drive(&call, &mut live, round).await
    }

    /// Waits for the call's next event on behalf of `round`: passes on progress and log
    /// messages, and returns the answer, or the backend's questions (parking the call).
    /// Dropped or cancelled midway (the client went away), the call is cancelled.
    async fn drive(
        self: &Arc<Self>,
        call: &Arc<Call>,
        live: &mut Live,
        round: Round<'_>,
    ) -> Result<ServerResult, ErrorData> {
        let mut abandon = Abandon {
            call: Some(Arc::clone(call)),
        };
        let mut relays_open = true;
        loop {
            tokio::select! {
                biased;
                _ = round.ct.cancelled() => {
                    return Err(ErrorData::internal_error("the request was cancelled", None));
                }
                msg = live.relays.recv(), if relays_open => match msg {
                    None => relays_open = false,
                    Some(RelayMsg::Request(request, reply)) => {
                        self.ask(live, &round, request, reply)?;
                        // Requests the backend sends together (each its own message on
                        // its stream) are asked in one round: those that follow within
                        // GATHER_QUIET of the last, up to GATHER_MAX in all.
                        let until = tokio::time::Instant::now() + GATHER_MAX;
                        while live.questions.len() < MAX_QUESTIONS {
                            let quiet = (tokio::time::Instant::now() + GATHER_QUIET).min(until);
                            match tokio::time::timeout_at(quiet, live.relays.recv()).await {
                                Ok(Some(RelayMsg::Request(request, reply))) => {
                                    self.ask(live, &round, request, reply)?
                                }
                                Ok(Some(other)) => pass_on(other, &round).await,
                                Ok(None) | Err(_) => break,
                            }
                        }
                        let result = self.park(call, live)?;
                        abandon.call = None;
                        return Ok(ServerResult::InputRequiredResult(result));
                    }
                    Some(other) => pass_on(other, &round).await,
                },
                done = &mut live.done => {
                    abandon.call = None;
                    // Whatever the backend sent just before its answer.
                    while let Ok(msg) = live.relays.try_recv() {
                        pass_on(msg, &round).await;
                    }
                    return done.unwrap_or_else(|_| {
                        Err(ErrorData::internal_error("the call ended without an answer", None))
                    });
                }
            }
        }
    }

    /// Adds a backend's request to the round's questions, or refuses the round when the
    /// client did not declare what it needs (the backend gets the same error).
    fn ask(
        &self,
        live: &mut Live,
        round: &Round<'_>,
        request: ServerRequest,
        reply: Reply,
    ) -> Result<(), ErrorData> {
        let (kind, request) = match request {
            ServerRequest::CreateMessageRequest(r) => {
                (Kind::Sampling, InputRequest::CreateMessage(r))
            }
            ServerRequest::ElicitRequest(r) => (Kind::Elicitation, InputRequest::Elicitation(r)),
            ServerRequest::ListRootsRequest(r) => (Kind::Roots, InputRequest::ListRoots(r)),
            _ => {
                let _ = reply.send(Err(ErrorData::method_not_found::<
                    rmcp::model::PingRequestMethod,
                >()));
                return Ok(());
            }
        };
        if let Some(missing) = missing(kind, &round.capabilities) {
            let refusal = ErrorData::missing_required_client_capability(missing);
            let _ = reply.send(Err(refusal.clone()));
            return Err(refusal);
        }
        live.asked += 1;
        let key = format!(
            "{}-{}",
            kind.method().split('/').next().unwrap_or("input"),
            live.asked
        );
        live.pending
            .insert(key.clone(), (kind, request.clone(), reply));
        live.questions.insert(key, request);
        Ok(())
    }

    /// Parks the call until its client retries, and says what to answer.
    fn park(
        self: &Arc<Self>,
        call: &Arc<Call>,
        live: &mut Live,
    ) -> Result<InputRequiredResult, ErrorData> {
        let requests = std::mem::take(&mut live.questions);
        let round = call.round.fetch_add(1, Ordering::AcqRel) + 1;
        let mut state = self.seal(
            &State::Parked {
                c: call.id,
                r: round,
                p: self.replica.clone(),
            },
            &call.binding,
        )?;
        if let Some(replica) = &self.replica {
            state = format!("{replica}{PARKED_ON}{state}");
        }
        {
            let mut parked = self.lock_parked();
            let mine = parked.values().filter(|c| c.owner == call.owner).count();
            if parked.len() >= self.limits.max || mine >= self.limits.max_per_credential {
                return Err(ErrorData::internal_error(
                    format!(
                        "too many calls wait for their client's input (the gateway's max_waiting_calls is {}, {} per credential)",
                        self.limits.max, self.limits.max_per_credential
                    ),
                    None,
                ));
            }
            parked.insert(call.id, Arc::clone(call));
        }
        // Nobody continues it in time: cancelled.
        let (rounds, weak) = (Arc::downgrade(self), Arc::downgrade(call));
        let timeout = self.limits.timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            expire(rounds, weak, round);
        });
        Ok(InputRequiredResult::new(Some(requests), Some(state)))
    }
}

/// Cancels a call still parked at `round` after its timeout.
fn expire(rounds: Weak<Rounds>, call: Weak<Call>, round: u64) {
    let (Some(rounds), Some(call)) = (rounds.upgrade(), call.upgrade()) else {
        return;
    };
    if call
        .round
        .compare_exchange(round, u64::MAX, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        tracing::debug!(
            call = call.id,
            "no retry within input_timeout_ms: cancelling the call"
        );
        rounds.lock_parked().remove(&call.id);
        call.cancel.cancel();
    }
}

/// Cancels the call when a round ends without an answer or questions for its client.
struct Abandon {
    call: Option<Arc<Call>>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.round.store(u64::MAX, Ordering::Release);
            call.cancel.cancel();
        }
    }
}

/// The capability a backend's request needs that the client did not declare.
fn missing(kind: Kind, declared: &ClientCapabilities) -> Option<ClientCapabilities> {
    let mut needed = ClientCapabilities::default();
    match kind {
        Kind::Sampling if declared.sampling.is_none() => needed.sampling = Some(Default::default()),
        Kind::Elicitation if declared.elicitation.is_none() => {
            needed.elicitation = Some(Default::default())
        }
        Kind::Roots if declared.roots.is_none() => needed.roots = Some(Default::default()),
        _ => return None,
    }
    Some(needed)
}

/// The client's answers to the open questions, each read as its request's result.
/// Keys the call did not ask are ignored (SEP-2322: unrecognized information is); an
/// answer of the wrong shape refuses the retry.
fn answers(
    pending: &BTreeMap<String, (Kind, InputRequest, Reply)>,
    mut responses: InputResponses,
) -> Result<Vec<(String, ClientResult)>, ErrorData> {
    let mut out = Vec::with_capacity(pending.len());
    for (key, (kind, _, _)) in pending {
        let Some(value) = responses.remove(key) else {
            continue;
        };
        let invalid = |e: serde_json::Error| {
            ErrorData::invalid_params(
                format!(
                    "the answer to \"{key}\" is not a {} result: {e}",
                    kind.method()
                ),
                None,
            )
        };
        let result = match kind {
            Kind::Sampling => ClientResult::CreateMessageResult(Box::new(
                serde_json::from_value::<CreateMessageResult>(value).map_err(invalid)?,
            )),
            Kind::Elicitation => ClientResult::ElicitResult(
                serde_json::from_value::<ElicitResult>(value).map_err(invalid)?,
            ),
            Kind::Roots => ClientResult::ListRootsResult(
                serde_json::from_value::<ListRootsResult>(value).map_err(invalid)?,
            ),
        };
        out.push((key.clone(), result));
    }
    Ok(out)
}

/// Passes a progress or log message on to the round's client, as its request asked.
#[allow(deprecated)] // logging is deprecated by SEP-2577 but still spoken
async fn pass_on(msg: RelayMsg, round: &Round<'_>) {
    match msg {
        RelayMsg::Progress(mut p) => {
            if let Some(token) = &round.progress_token {
                p.progress_token = token.clone();
                let _ = round.peer.notify_progress(p).await;
            }
        }
        RelayMsg::Log(l) => {
            if round.log_level.is_some_and(|min| {
                crate::upstream::level_rank(l.level) >= crate::upstream::level_rank(min)
            }) {
                let _ = round.peer.notify_logging_message(l).await;
            }
        }
        RelayMsg::Request(_, reply) => {
            let _ = reply.send(Err(ErrorData::internal_error(
                "the gateway's client cannot be asked now",
                None,
            )));
        }
        RelayMsg::StreamClosed(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(v: Value) -> JsonObject {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn the_binding_ignores_key_order_and_nothing_else() {
        let a = object(json!({"x": 1, "y": {"b": [1, {"d": 2, "c": 3}], "a": null}}));
        let b = object(json!({"y": {"a": null, "b": [1, {"c": 3, "d": 2}]}, "x": 1}));
        let bind = |owner, args: &JsonObject| binding(owner, "tools/call", "t", Some(args));
        assert_eq!(bind("alice", &a), bind("alice", &b));
        assert_ne!(bind("alice", &a), bind("bob", &a));
        let c = object(json!({"x": 2, "y": {"a": null, "b": [1, {"c": 3, "d": 2}]}}));
        assert_ne!(bind("alice", &a), bind("alice", &c));
        assert_ne!(
            binding("alice", "tools/call", "t", None),
            binding("alice", "tools/call", "t", Some(&JsonObject::new()))
        );
        // No field's text passes for the next one's.
        assert_ne!(
            binding("alice:5", "tools/call", "t", None),
            binding("alice", "5:tools/call", "t", None)
        );
    }

    /// Call 1's first round, parked by a lone gateway.
    fn parked_here() -> State {
        State::Parked {
            c: 1,
            r: 1,
            p: None,
        }
    }

    #[test]
    fn a_state_parked_on_a_replica_opens_there_only() {
        let limits = Limits {
            timeout: Duration::from_secs(5),
            max: 4,
            max_per_credential: 4,
        };
        let key = Some([7u8; 32]);
        let (a, b) = (
            Rounds::new(limits, key).in_cluster("replica-a"),
            Rounds::new(limits, key).in_cluster("replica-b"),
        );
        let parked = |p: &str| State::Parked {
            c: 1,
            r: 1,
            p: Some(p.into()),
        };
        let sealed = a.seal(&parked("replica-a"), b"alice").expect("seal");
        let state = format!("replica-a{PARKED_ON}{sealed}");
        assert_eq!(parked_on(&state), Some("replica-a"));
        assert_eq!(parked_on(&sealed), None);
        assert!(matches!(
            a.open(b"alice", &state),
            Ok(Opened::Parked(Parked { c: 1, r: 1 }))
        ));
        match b.open(b"alice", &state) {
            Err(refused) => assert!(refused.message.contains("replica-a"), "{}", refused.message),
            Ok(_) => panic!("a state parked on replica-a opened on replica-b"),
        }
        // The routing prefix is not what is trusted: a's state relabelled as b's does
        // not open on b (where a parked call 1 may wait too).
        let relabelled = format!("replica-b{PARKED_ON}{sealed}");
        assert!(b.open(b"alice", &relabelled).is_err());
        // A lone gateway (no prefix of its own) finds such a state simply not its own.
        let lone = Rounds::new(limits, key);
        match lone.open(b"alice", &state) {
            Err(refused) => assert!(!refused.message.contains("replica"), "{}", refused.message),
            Ok(_) => panic!("a cluster's state opened on a lone gateway"),
        }
    }

    #[tokio::test]
    async fn a_state_opens_only_for_its_binding_and_before_its_timeout() {
        let rounds = Rounds::new(
            Limits {
                timeout: Duration::from_millis(50),
                max: 4,
                max_per_credential: 4,
            },
            None,
        );
        let sealed = rounds.seal(&parked_here(), b"alice").expect("seal");
        assert!(matches!(
            rounds.open(b"alice", &sealed),
            Ok(Opened::Parked(Parked { c: 1, r: 1 }))
        ));
        assert!(rounds.open(b"bob", &sealed).is_err());
        // Another process (another key) cannot open it; a replica of one cluster (the
        // same derived key) can.
        let other = Rounds::new(rounds.limits, None);
        assert!(other.open(b"alice", &sealed).is_err());
        let key = crate::store::cipher::derive("a cluster key, long", b"requestState");
        let (one, two) = (
            Rounds::new(rounds.limits, Some(key)),
            Rounds::new(rounds.limits, Some(key)),
        );
        let sealed_by_one = one.seal(&parked_here(), b"alice").expect("seal");
        assert!(two.open(b"alice", &sealed_by_one).is_ok());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(rounds.open(b"alice", &sealed).is_err());
    }

    #[test]
    fn a_backends_own_state_travels_sealed_inside_the_gateways() {
        let rounds = Rounds::new(
            Limits {
                timeout: Duration::from_secs(60),
                max: 4,
                max_per_credential: 4,
            },
            None,
        );
        let theirs = InputRequiredResult::new(None, Some("backend-state".into()));
        let ours = rounds
            .seal_upstream(b"alice", "affinity-1", theirs)
            .expect("seal");
        let sealed = ours.request_state.expect("a state");
        assert_ne!(
            sealed, "backend-state",
            "the gateway's own state, around the backend's"
        );
        match rounds.open(b"alice", &sealed) {
            Ok(Opened::Upstream { affinity, state }) => {
                assert_eq!(affinity, "affinity-1");
                assert_eq!(state.as_deref(), Some("backend-state"));
            }
            _ => panic!("the backend's state did not open"),
        }
        assert!(rounds.open(b"bob", &sealed).is_err());
        // A backend that sent no state gets none added (the client sees what it sent).
        let none = rounds
            .seal_upstream(b"alice", "a", InputRequiredResult::new(None, None))
            .expect("seal");
        assert!(none.request_state.is_none());
    }

    #[test]
    fn answers_are_read_as_their_questions_results_and_strangers_ignored() {
        let mut pending = BTreeMap::new();
        let (tx, _rx) = oneshot::channel();
        let question = InputRequest::ListRoots(rmcp::model::ListRootsRequest {
            method: Default::default(),
            extensions: Default::default(),
        });
        pending.insert("roots-1".to_string(), (Kind::Roots, question, tx));
        let roots = json!({"roots": [{"uri": "file:///w"}]});
        let answer = |v: Value| answers(&pending, serde_json::from_value(v).expect("map"));
        assert_eq!(answer(json!({"roots-1": roots})).expect("read").len(), 1);
        // Missing: nothing to pass on (the question is asked again).
        assert!(answer(json!({})).expect("read").is_empty());
        // A key nobody asked is ignored.
        assert_eq!(
            answer(json!({"roots-1": roots, "x": {}}))
                .expect("read")
                .len(),
            1
        );
        let shape = answer(json!({"roots-1": {"roots": "no"}})).expect_err("shape");
        assert!(shape.message.contains("roots/list result"), "{shape:?}");
    }
}
