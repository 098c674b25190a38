//! Server-sent events read from a stream of byte chunks, yielding sse-stream's [`Sse`]
//! events and errors with the rules that crate applies (a line without a colon or with a
//! field other than `data`, `event`, `id`, `retry` or a comment is an error; so is a
//! second `event`, `id` or `retry` in one event; an `id` holding NUL is ignored; lines end
//! with LF, CR or CRLF, also across chunks; a leading BOM is dropped; an event left
//! unfinished when the stream ends is dropped). The difference is speed: lines are
//! found with `memchr`, where sse-stream looks at every byte in turn. An upstream's
//! answer is one `data:` line of JSON, often kilobytes long, on every proxied call.
//!
//! Invariant: the events and errors are those sse-stream 0.2 yields for the same bytes,
//! however they are split into chunks (the tests compare the two).

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures::Stream;
pub use sse_stream::{Error, Sse};

/// The events of `bytes` (see the module documentation).
pub fn events<S, E>(bytes: S) -> Events<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    Events {
        bytes,
        parser: Parser {
            first_line: true,
            ..Parser::default()
        },
    }
}

/// A stream of SSE events read from a stream of byte chunks.
pub struct Events<S> {
    bytes: S,
    parser: Parser,
}

impl<S, E> Stream for Events<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    type Item = Result<Sse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.parser.parsed.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            match ready!(Pin::new(&mut this.bytes).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(Error::Body(Box::new(e))))),
                Some(Ok(chunk)) => {
                    if let Err(e) = this.parser.feed(&chunk) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
        }
    }
}

/// Sets a field an event carries at most once: `twice` when it has it already.
fn once<T>(field: &mut Option<T>, value: T, twice: Error) -> Result<(), Error> {
    if field.is_some() {
        return Err(twice);
    }
    *field = Some(value);
    Ok(())
}

/// A field's value as text.
fn text(value: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(value).map_err(Error::Utf8Parse)
}

#[derive(Default)]
struct Parser {
    parsed: VecDeque<Sse>,
    current: Option<Sse>,
    /// The start of a line whose end has not arrived.
    partial: Vec<u8>,
    /// The last chunk ended with CR: an LF starting the next one ends no line.
    after_cr: bool,
    first_line: bool,
}

impl Parser {
    /// Reads one chunk: its complete lines now, the rest kept for the next.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        // An empty chunk changes nothing (not even what a CR before it left pending).
        if bytes.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.after_cr)
            && let Some(rest) = bytes.strip_prefix(b"\n")
        {
            bytes = rest;
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) {
            if self.partial.is_empty() {
                self.line(&bytes[..end])?;
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(&bytes[..end]);
                let read = self.line(&whole);
                whole.clear();
                self.partial = whole;
                read?;
            }
            let cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn line(&mut self, mut line: &[u8]) -> Result<(), Error> {
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if let Some(event) = self.current.take() {
                self.parsed.push_back(event);
            }
            return Ok(());
        }
        let colon = memchr::memchr(b':', line).ok_or(Error::InvalidLine)?;
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match &line[..colon] {
            b"data" => {
                let data = text(value)?;
                match &mut self.current.get_or_insert_default().data {
                    Some(held) => {
                        held.push('\n');
                        held.push_str(data);
                    }
                    none => *none = Some(data.to_owned()),
                }
            }
            b"event" => {
                let name = text(value)?.to_owned();
                let event = self.current.get_or_insert_default();
                once(&mut event.event, name, Error::DuplicatedEventLine)?;
            }
            // An id holding NUL is ignored (the WHATWG rule).
            b"id" if memchr::memchr(0, value).is_some() => {}
            b"id" => {
                let id = text(value)?.to_owned();
                let event = self.current.get_or_insert_default();
                once(&mut event.id, id, Error::DuplicatedIdLine)?;
            }
            b"retry" => {
                let ms = text(value)?
                    .trim_ascii()
                    .parse::<u64>()
                    .map_err(Error::IntParse)?;
                let event = self.current.get_or_insert_default();
                once(&mut event.retry, ms, Error::DuplicatedRetry)?;
            }
            // A comment.
            b"" => {}
            _ => return Err(Error::InvalidLine),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    /// What a stream yields, errors as their text.
    fn read<St: Stream<Item = Result<Sse, Error>> + Unpin>(stream: St) -> Vec<Result<Sse, String>> {
        futures::executor::block_on(stream.map(|r| r.map_err(|e| e.to_string())).collect())
    }

    fn chunks(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::copy_from_slice(p)))
                .collect::<Vec<_>>(),
        )
    }

    /// Every input, whole and cut at every byte (and at every pair of bytes), reads as
    /// sse-stream reads it.
    #[test]
    fn events_and_errors_are_sse_streams_however_the_bytes_are_cut() {
        let inputs: &[&[u8]] = &[
            b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
            b"\xEF\xBB\xBFid: 7\r\nevent: message\r\ndata: a\r\ndata:  b\r\nretry: 3000\r\n\r\n",
            b"data: one\rdata: two\r\rid: x\r\n\ndata: no end",
            b": a comment\n\nid: 1\nid: 2\n\n",
            b"event: a\nevent: b\n\n",
            b"retry: soon\n\n",
            b"retry: 5\nretry: 6\n\n",
            b"bogus line\n\ndata: after\n\n",
            b"unknown: field\n\n",
            b"id: a\0b\ndata: kept\n\n",
            b"data: \xff\xfe\n\n",
            b"\n\n\ndata\n:\n\r\n",
            b"data: x\r",
            b"",
        ];
        for input in inputs {
            let mut cuts: Vec<Vec<&[u8]>> = vec![vec![input]];
            for i in 0..=input.len() {
                cuts.push(vec![&input[..i], &input[i..]]);
                for j in i..=input.len() {
                    cuts.push(vec![&input[..i], &input[i..j], &input[j..]]);
                }
            }
            for parts in cuts {
                let ours = read(events(chunks(&parts)));
                let theirs = read(sse_stream::SseStream::from_bytes_stream(chunks(&parts)));
                assert_eq!(ours, theirs, "{input:?} in {parts:?}");
            }
        }
        // A sample of what they read, so that agreeing on nothing cannot pass.
        let read_whole = |input: &[u8]| read(events(chunks(&[input])));
        assert_eq!(
            read_whole(inputs[1]),
            vec![Ok(Sse {
                event: Some("message".into()),
                data: Some("a\n b".into()),
                id: Some("7".into()),
                retry: Some(3000),
            })]
        );
        assert_eq!(
            read_whole(inputs[2]),
            vec![
                Ok(Sse::default().data("one\ntwo")),
                Ok(Sse::default().id("x")),
            ]
        );
        assert_eq!(
            read_whole(inputs[4]),
            vec![Err("duplicated event line".into())]
        );
        assert_eq!(read_whole(inputs[9]), vec![Ok(Sse::default().data("kept"))]);
    }

    /// A body that fails is an error naming the failure.
    #[test]
    fn a_failing_body_is_an_error() {
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"data: 1\n\n")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let read = read(events(failing));
        assert_eq!(read[0], Ok(Sse::default().data("1")));
        assert!(
            read[1]
                .as_ref()
                .is_err_and(|e| e.contains("connection reset")),
            "{read:?}"
        );
    }
}
