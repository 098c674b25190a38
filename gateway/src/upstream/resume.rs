//! A backend's server-initiated disconnection of a request's SSE stream (SEP-1699),
//! noticed so the gateway can do the same to its own client.
//!
//! A backend may close the SSE stream of a request it is still working on, after an
//! event carrying a `retry` hint; the client is to come back with `GET` and
//! `Last-Event-ID` and receive the rest there. rmcp's client does that by itself, so
//! without help the gateway's client would never know. [`WatchedHttp`] is the upstream
//! sessions' HTTP client: reqwest's, with every POST's SSE stream watched. When a stream
//! ends, the last event id it carried is remembered with the request it belonged to; when
//! rmcp then resumes from that id, the request was cut off mid-call by the backend, and
//! its downstream call gets [`RelayMsg::StreamClosed`] with the backend's hint. A resumed
//! stream is watched in turn, so a backend that closes again is followed every time.
//!
//! It also tells the session's [`RawTarget`] the session id the backend assigned, and
//! holds answers to `max_response_bytes`: an answer over it (a JSON body, or one SSE
//! message, which rmcp's own bound stops while reading) becomes a JSON-RPC error for that
//! request alone. Left to rmcp, an oversized SSE message would close the whole session.
//!
//! Streams that simply end after their answer are remembered too (which one will be
//! resumed is only known later) in a short list that forgets the oldest.
//!
//! Invariant: a stream is resumed only for the request that owned it, and an oversized
//! answer fails that request alone.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::{Stream, StreamExt, stream::BoxStream};
use http::{HeaderName, HeaderValue};
use rmcp::{
    model::{ClientJsonRpcMessage, RequestId, ServerJsonRpcMessage},
    transport::streamable_http_client::{
        SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    },
};
use sse_stream::Sse;

use super::{
    raw::RawTarget,
    relay::{RelayMsg, Relays},
};
use crate::vocab::ParamHeaders;

/// How many ended streams are remembered per upstream session. rmcp resumes a stream a
/// `retry` interval after it ended, while newer calls end theirs meanwhile.
const REMEMBERED: usize = 256;

type SseStream = BoxStream<'static, Result<Sse, SseError>>;
type Error = StreamableHttpError<reqwest::Error>;

/// The HTTP client of one upstream session (see the module documentation).
#[derive(Clone)]
pub struct WatchedHttp {
    inner: reqwest::Client,
    ended: Arc<Mutex<VecDeque<Ended>>>,
    relays: Arc<Relays>,
    raw: Arc<RawTarget>,
    /// Largest JSON answer accepted (rmcp itself stops at [`RMCP_JSON_LIMIT`]).
    max_json: usize,
    /// What a request whose answer is too large gets instead.
    too_large: Arc<rmcp::ErrorData>,
    /// The instance's tools whose arguments travel in `Mcp-Param-*` headers too.
    params: ParamTable,
}

/// A backend's tools (by their names there) whose arguments also travel in
/// `Mcp-Param-*` headers (SEP-2243), kept with the instance's tool list. rmcp's client
/// adds those headers only for tools whose list it saw on the same connection, and not
/// always then (a list answered on an SSE stream that ends first skips its cache), and
/// never forgets one: the gateway's table alone decides them (see [`param_headers`]).
pub type ParamTable = Arc<arc_swap::ArcSwap<HashMap<String, Arc<ParamHeaders>>>>;

/// rmcp's own bound on a JSON response body.
const RMCP_JSON_LIMIT: usize = 16 * 1024 * 1024;

/// A request's stream that ended: where it stopped, and the backend's last retry hint.
struct Ended {
    last_event_id: String,
    request: RequestId,
    retry: Option<u64>,
}

impl WatchedHttp {
    pub fn new(
        inner: reqwest::Client,
        relays: Arc<Relays>,
        raw: Arc<RawTarget>,
        max_json: usize,
        too_large: rmcp::ErrorData,
        params: ParamTable,
    ) -> Self {
        Self {
            inner,
            ended: Arc::default(),
            relays,
            raw,
            max_json,
            too_large: Arc::new(too_large),
            params,
        }
    }

    fn watch(&self, stream: SseStream, request: RequestId) -> SseStream {
        Box::pin(Watched {
            inner: stream,
            request: Some(request),
            last_event_id: None,
            retry: None,
            ended: Arc::clone(&self.ended),
            too_large: Arc::clone(&self.too_large),
            finished: false,
        })
    }

    /// The error answer of `request`, whose real answer was too large.
    fn too_large_answer(&self, request: RequestId) -> StreamableHttpPostResponse {
        StreamableHttpPostResponse::Json(too_large_message(&self.too_large, request), None)
    }

    /// The request whose stream stopped at `last_event_id`, if one did.
    fn take_ended(&self, last_event_id: &str) -> Option<Ended> {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        let at = ended
            .iter()
            .rposition(|e| e.last_event_id == last_event_id)?;
        ended.remove(at)
    }
}

/// A POST's (or resumed GET's) SSE stream, passed through unchanged.
struct Watched {
    inner: SseStream,
    request: Option<RequestId>,
    last_event_id: Option<String>,
    retry: Option<u64>,
    ended: Arc<Mutex<VecDeque<Ended>>>,
    too_large: Arc<rmcp::ErrorData>,
    /// Ended early, after an error answer in place of an oversized message.
    finished: bool,
}

fn too_large_message(error: &rmcp::ErrorData, request: RequestId) -> ServerJsonRpcMessage {
    ServerJsonRpcMessage::error(error.clone(), Some(request))
}

/// rmcp's bounded SSE reader failed on a message over the configured size (its error
/// type is private; its text is fixed in the pinned version).
fn is_too_large(e: &SseError) -> bool {
    e.to_string().contains("exceeded the maximum size")
}

impl Stream for Watched {
    type Item = Result<Sse, SseError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let item = ready!(this.inner.poll_next_unpin(cx));
        if let Some(Err(e)) = &item
            && is_too_large(e)
            && let Some(request) = this.request.take()
        {
            this.finished = true;
            let answer = too_large_message(&this.too_large, request);
            return Poll::Ready(Some(Ok(Sse {
                event: None,
                data: serde_json::to_string(&answer).ok(),
                id: None,
                retry: None,
            })));
        }
        match &item {
            Some(Ok(event)) => {
                if let Some(id) = &event.id {
                    this.last_event_id = Some(id.clone());
                }
                if event.retry.is_some() {
                    this.retry = event.retry;
                }
            }
            // A clean end; a broken stream is resumed by rmcp but was not the backend's
            // decision, so there is nothing to pass on.
            None => {
                if let (Some(last_event_id), Some(request)) =
                    (this.last_event_id.take(), this.request.take())
                {
                    let mut ended = this.ended.lock().unwrap_or_else(|p| p.into_inner());
                    if ended.len() >= REMEMBERED {
                        ended.pop_front();
                    }
                    ended.push_back(Ended {
                        last_event_id,
                        request,
                        retry: this.retry,
                    });
                }
            }
            Some(Err(_)) => this.request = None,
        }
        Poll::Ready(item)
    }
}

impl StreamableHttpClient for WatchedHttp {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let request = request_id(&message);
        trace_header(&message, &mut custom_headers);
        param_headers(&self.params.load(), &message, &mut custom_headers);
        let response = self
            .inner
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await;
        self.answer(response, request)
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let request = request_id(&message);
        trace_header(&message, &mut custom_headers);
        param_headers(&self.params.load(), &message, &mut custom_headers);
        let response = self
            .inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.answer(response, request)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Error> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<SseStream, Error> {
        let cut = self.cut_off(last_event_id.as_deref());
        let stream = self
            .inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await?;
        Ok(self.rewatch(stream, cut))
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<SseStream, Error> {
        let cut = self.cut_off(last_event_id.as_deref());
        let stream = self
            .inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await?;
        Ok(self.rewatch(stream, cut))
    }
}

/// The `Mcp-Param-*` headers of a 2026-07-28 tool call (rmcp set its `Mcp-Method`),
/// from the instance's `table` alone: rmcp's own may be missing, or out of date after
/// the backend changed its tools (its cache only ever adds).
fn param_headers(
    table: &HashMap<String, Arc<ParamHeaders>>,
    message: &ClientJsonRpcMessage,
    headers: &mut HashMap<HeaderName, HeaderValue>,
) {
    if let ClientJsonRpcMessage::Request(r) = message
        && let rmcp::model::ClientRequest::CallToolRequest(call) = &r.request
        // By a `HeaderName`: a `str` key hashes differently.
        && headers.contains_key(&crate::vocab::MCP_METHOD)
    {
        headers.retain(|h, _| !h.as_str().starts_with("mcp-param-"));
        if let Some(annotated) = table.get(call.params.name.as_ref()) {
            let none = serde_json::Map::new();
            let arguments = call.params.arguments.as_ref().unwrap_or(&none);
            headers.extend(annotated.headers(arguments));
        }
    }
}

/// A tool call carrying W3C trace context in `_meta` carries it in the `traceparent`
/// header too.
fn trace_header(message: &ClientJsonRpcMessage, headers: &mut HashMap<HeaderName, HeaderValue>) {
    if let ClientJsonRpcMessage::Request(r) = message
        && let rmcp::model::ClientRequest::CallToolRequest(call) = &r.request
        && let Some(traceparent) = call.params.meta.as_ref().and_then(|m| m.get_traceparent())
        && let Ok(value) = HeaderValue::from_str(traceparent)
    {
        headers.insert(HeaderName::from_static("traceparent"), value);
    }
}

fn request_id(message: &ClientJsonRpcMessage) -> Option<RequestId> {
    match message {
        ClientJsonRpcMessage::Request(r) => Some(r.id.clone()),
        _ => None,
    }
}

impl WatchedHttp {
    /// A request's answer: an SSE stream watched, an oversized one replaced by an error.
    fn answer(
        &self,
        response: Result<StreamableHttpPostResponse, Error>,
        request: Option<RequestId>,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let response = match (response, request.clone()) {
            // rmcp's bound on an answer: the answer was too large.
            (Err(StreamableHttpError::ResponseBodyTooLarge { max_size }), Some(request))
                if max_size >= RMCP_JSON_LIMIT.min(self.max_json) =>
            {
                return Ok(self.too_large_answer(request));
            }
            // rmcp's (much smaller) bound on the body of an HTTP error status: the
            // backend refused the request, with more text than rmcp reads.
            (Err(StreamableHttpError::ResponseBodyTooLarge { .. }), _) => {
                return Err(StreamableHttpError::UnexpectedServerResponse(
                    super::OVERSIZED_ERROR_BODY.into(),
                ));
            }
            (response, _) => response?,
        };
        // rmcp read the body within its own bound; a smaller configured one is checked
        // on the parsed message (only then, so the default costs nothing).
        if let (StreamableHttpPostResponse::Json(message, _), Some(request)) = (&response, &request)
            && self.max_json < RMCP_JSON_LIMIT
            && json_len(message) > self.max_json
        {
            return Ok(self.too_large_answer(request.clone()));
        }
        // The session id the backend assigned, for the pass-through path.
        if let StreamableHttpPostResponse::Sse(_, Some(id))
        | StreamableHttpPostResponse::Json(_, Some(id)) = &response
        {
            self.raw.note_session(id);
        }
        Ok(match (response, request) {
            (StreamableHttpPostResponse::Sse(stream, session), Some(request)) => {
                StreamableHttpPostResponse::Sse(self.watch(stream, request), session)
            }
            (other, _) => other,
        })
    }

    /// rmcp resumes from `last_event_id`: if a request's stream ended there, the backend
    /// cut that request off mid-call; its downstream call hears of it.
    fn cut_off(&self, last_event_id: Option<&str>) -> Option<RequestId> {
        let ended = self.take_ended(last_event_id?)?;
        let retry = ended.retry.map(Duration::from_millis);
        tracing::debug!(request = %ended.request, ?retry, "backend closed a request's stream; resuming it");
        self.relays
            .notify(&ended.request, RelayMsg::StreamClosed(retry));
        Some(ended.request)
    }

    fn rewatch(&self, stream: SseStream, cut: Option<RequestId>) -> SseStream {
        match cut {
            Some(request) => self.watch(stream, request),
            None => stream,
        }
    }
}

/// The length of `message` as JSON text, without building the text.
pub(crate) fn json_len(message: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, message);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_modern_calls_param_headers_come_from_the_table_alone() {
        let schema =
            json!({"properties": {"region": {"type": "string", "x-mcp-header": "Region"}}});
        let annotated = ParamHeaders::of(schema.as_object().unwrap())
            .unwrap()
            .unwrap();
        let table = HashMap::from([("t".to_string(), Arc::new(annotated))]);
        let call = |name: &str| -> ClientJsonRpcMessage {
            serde_json::from_value(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": name, "arguments": {"region": "eu"}}}))
            .unwrap()
        };
        let name = |n: &'static str| HeaderName::from_static(n);
        let value = |v: &'static str| HeaderValue::from_static(v);
        // rmcp's stale set (an annotation the backend renamed since) is replaced.
        let mut headers = HashMap::from([
            (name("mcp-method"), value("tools/call")),
            (name("mcp-param-old"), value("eu")),
        ]);
        param_headers(&table, &call("t"), &mut headers);
        assert_eq!(headers.get(&name("mcp-param-region")), Some(&value("eu")));
        assert!(!headers.contains_key(&name("mcp-param-old")));
        // A tool the table does not name carries none.
        let mut headers = HashMap::from([
            (name("mcp-method"), value("tools/call")),
            (name("mcp-param-old"), value("eu")),
        ]);
        param_headers(&table, &call("other"), &mut headers);
        assert_eq!(headers.len(), 1);
        // A 2025-11-25 session's request (no Mcp-Method) is left as it is.
        let mut headers = HashMap::new();
        param_headers(&table, &call("t"), &mut headers);
        assert!(headers.is_empty());
    }
}
