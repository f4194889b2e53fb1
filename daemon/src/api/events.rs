//! `GET /v1/events`: the daemon's events as they happen, one stream per request.
//!
//! Each request subscribes to the event bus ([`ApiState::events`]) and gets every event from
//! then on: NDJSON (`application/x-ndjson`, one JSON object per line) by default, server-sent
//! events when the client sends `Accept: text/event-stream` (`id: <seq>` and `data: <json>`
//! lines, then an empty line). A client that reads too slowly loses the oldest events; it is told
//! with one `lagged` event (`missed` = how many) in their place, and the stream goes on.
//!
//! A stream ends when serving ends ([`Shutdown`], which the server attaches to every request),
//! so open streams never hold the drain of a stopping daemon. While it runs, the stream keeps
//! its connection busy (see [`super::activity`]): it is answering a request, so it is never
//! closed to make room for a newcomer. What bounds the room streams take instead is a cap of
//! their own ([`MAX_EVENT_STREAMS`], [`MAX_EVENT_STREAMS_PER_UID`]; more get 503 at once), set
//! well below the connection caps so that a uid's share, and the server as a whole, always keep
//! connections that can give way. A keep-alive (an empty line; a `:` comment line in SSE) after
//! [`KEEPALIVE`] without events makes a vanished client's stream fail its write and end, so it
//! does not hold its slot until the daemon stops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use wgmesh_api_types::{Event, EventKind, Problem, SCHEMA_VERSION, problem_type};

use super::ApiState;
use super::auth::Caller;
use super::limits::MAX_IN_FLIGHT;
use super::problem::ProblemResponse;
use super::server::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID};

/// Event streams open at once, over all callers; more are refused with 503.
pub const MAX_EVENT_STREAMS: usize = 64;
/// Event streams one uid may hold open; more are refused with 503.
pub const MAX_EVENT_STREAMS_PER_UID: usize = 8;
/// A keep-alive goes out after this long without an event.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

// Streams are busy connections that are never closed for room. With them capped well below the
// connection caps, a uid at its share and the server at its cap still hold connections that
// are idle or soon will be (a request's response is bounded by the request timeout), so the
// admission in `slots.rs` keeps working.
const _: () = assert!(MAX_EVENT_STREAMS_PER_UID * 4 <= MAX_CONNECTIONS_PER_UID);
const _: () = assert!(MAX_EVENT_STREAMS + MAX_IN_FLIGHT <= MAX_CONNECTIONS / 2);

/// The server's stop signal, attached to every request it serves: streams end when it fires.
#[derive(Debug, Clone)]
pub(super) struct Shutdown(pub(super) CancellationToken);

/// The routes this module serves.
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/events", get(get_events))
}

/// Follows the daemon's events from now on: NDJSON, or server-sent events on request.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "node",
    params(
        ("Accept" = Option<String>, Header, description = "`text/event-stream` for server-sent events; anything else (or nothing) for NDJSON."),
    ),
    responses(
        (status = 200, description = "A stream that ends when the daemon stops. NDJSON: one `Event` per line; an empty line is a keep-alive. Server-sent events: `id: <seq>` and `data: <Event as JSON>` lines, then an empty line; `:` lines are keep-alives. A reader that falls behind gets a `lagged` event in place of what it missed.", content(
            (Event = "application/x-ndjson"),
            (String = "text/event-stream"),
        )),
        (status = 503, description = "Too many event streams are open (overall, or for the caller's uid).", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_events(
    State(state): State<ApiState>,
    caller: Caller,
    shutdown: Option<Extension<Shutdown>>,
    headers: HeaderMap,
) -> Result<Response, ProblemResponse> {
    let slot = state.streams.open(caller.uid)?;
    let framing = Framing::of(&headers);
    let stop = shutdown.map_or_else(CancellationToken::new, |Extension(Shutdown(t))| t);
    let feed = Feed::new(state.events.subscribe(), stop, framing, slot, KEEPALIVE);
    let mut response = Body::from_stream(feed.into_stream()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, framing.content_type());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// One JSON object per line.
    Ndjson,
    /// Server-sent events.
    Sse,
}

impl Framing {
    /// SSE when `Accept` names `text/event-stream`, else NDJSON.
    fn of(headers: &HeaderMap) -> Self {
        let sse = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|range| range.split(';').next())
            .any(|media| media.trim().eq_ignore_ascii_case("text/event-stream"));
        if sse { Self::Sse } else { Self::Ndjson }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Sse => "text/event-stream",
        })
    }

    /// `event` as one frame, appended to `out`.
    fn frame(self, event: &Event, out: &mut Vec<u8>) {
        let json = match serde_json::to_string(event) {
            Ok(json) => json,
            // Cannot happen for these plain types; a stream must not die of it either.
            Err(err) => {
                tracing::error!(error = %err, seq = event.seq, "cannot serialize an event; skipped");
                return;
            }
        };
        match self {
            Self::Ndjson => {
                out.extend_from_slice(json.as_bytes());
                out.push(b'\n');
            }
            Self::Sse => {
                out.extend_from_slice(format!("id: {}\ndata: {json}\n\n", event.seq).as_bytes());
            }
        }
    }

    fn keepalive(self) -> &'static [u8] {
        match self {
            Self::Ndjson => b"\n",
            Self::Sse => b":\n\n",
        }
    }
}

/// One open event stream: its subscription and what ends it.
struct Feed {
    events: broadcast::Receiver<Event>,
    stop: CancellationToken,
    framing: Framing,
    keepalive: Interval,
    /// Held for the stream's life: its place under the stream caps.
    _slot: StreamSlot,
}

impl Feed {
    fn new(
        events: broadcast::Receiver<Event>,
        stop: CancellationToken,
        framing: Framing,
        slot: StreamSlot,
        keepalive: Duration,
    ) -> Self {
        let mut tick = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            events,
            stop,
            framing,
            keepalive: tick,
            _slot: slot,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        futures_util::stream::unfold(self, |mut feed| async move {
            let chunk = feed.next().await?;
            Some((Ok(chunk), feed))
        })
    }

    /// The next chunk to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let mut out = Vec::new();
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return None,
                received = self.events.recv() => match received {
                    Ok(event) => self.framing.frame(&event, &mut out),
                    Err(RecvError::Lagged(missed)) => self.lagged(missed, &mut out),
                    // Every sender is gone: nothing more will come.
                    Err(RecvError::Closed) => return None,
                },
                _ = self.keepalive.tick() => {
                    out.extend_from_slice(self.framing.keepalive());
                }
            }
            if !out.is_empty() {
                self.keepalive.reset();
                return Some(Bytes::from(out));
            }
        }
    }

    /// Frames a `lagged` event for `missed` lost events, followed by the oldest event still
    /// buffered (the receiver has just skipped to it, so it is there at once). The `lagged`
    /// event takes the `seq` of the last event it stands for, when that is known.
    fn lagged(&mut self, missed: u64, out: &mut Vec<u8>) {
        let next = self.events.try_recv().ok();
        let lagged = Event {
            schema_version: SCHEMA_VERSION,
            seq: next.as_ref().map_or(0, |e| e.seq.saturating_sub(1)),
            unix_ms: unix_ms(),
            kind: EventKind::Lagged { missed },
        };
        tracing::debug!(missed, "an event stream fell behind");
        self.framing.frame(&lagged, out);
        if let Some(next) = next {
            self.framing.frame(&next, out);
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How many event streams are open, overall and per uid.
#[derive(Debug, Default)]
pub(super) struct EventStreams {
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Streams by uid (`None`: a caller without credentials, only in tests).
    by_uid: HashMap<Option<u32>, usize>,
}

impl EventStreams {
    /// A slot for a new stream of `uid`, or 503 when a cap is reached.
    fn open(self: &Arc<Self>, uid: Option<u32>) -> Result<StreamSlot, ProblemResponse> {
        let mut open = self.lock();
        let mine = open.by_uid.get(&uid).copied().unwrap_or(0);
        if open.total >= MAX_EVENT_STREAMS || mine >= MAX_EVENT_STREAMS_PER_UID {
            let who = uid.map_or_else(|| "this caller".to_owned(), |u| format!("uid {u}"));
            return Err(ProblemResponse::new(
                StatusCode::SERVICE_UNAVAILABLE,
                problem_type::OVERLOADED,
                format!(
                    "too many event streams: {} open ({mine} of {who}); at most {MAX_EVENT_STREAMS}, {MAX_EVENT_STREAMS_PER_UID} per uid",
                    open.total
                ),
            ));
        }
        open.total += 1;
        *open.by_uid.entry(uid).or_insert(0) += 1;
        Ok(StreamSlot {
            streams: Arc::clone(self),
            uid,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // Every update is a couple of plain statements: consistent even after a panic.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open stream's place under the caps; given back on drop.
struct StreamSlot {
    streams: Arc<EventStreams>,
    uid: Option<u32>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(mine) = open.by_uid.get_mut(&self.uid) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.by_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            seq,
            unix_ms: 1_700_000_000_000 + seq,
            kind: EventKind::PeerChanged {
                public_key: format!("k{seq}"),
            },
        }
    }

    fn parse_ndjson(chunk: &[u8]) -> Vec<Event> {
        std::str::from_utf8(chunk)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn feed(bus: &broadcast::Sender<Event>, framing: Framing, stop: &CancellationToken) -> Feed {
        let streams = Arc::new(EventStreams::default());
        let slot = streams.open(Some(1000)).unwrap();
        Feed::new(bus.subscribe(), stop.clone(), framing, slot, KEEPALIVE)
    }

    #[tokio::test(start_paused = true)]
    async fn ndjson_one_event_per_line_then_the_end_at_shutdown() {
        let (bus, _) = broadcast::channel(16);
        let stop = CancellationToken::new();
        let mut feed = feed(&bus, Framing::Ndjson, &stop);
        bus.send(event(1)).unwrap();
        bus.send(event(2)).unwrap();
        let first = feed.next().await.unwrap();
        assert_eq!(first.last(), Some(&b'\n'));
        assert_eq!(parse_ndjson(&first), vec![event(1)]);
        assert_eq!(parse_ndjson(&feed.next().await.unwrap()), vec![event(2)]);
        stop.cancel();
        assert_eq!(feed.next().await, None, "ends at shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn sse_frames_carry_the_seq_as_id() {
        let (bus, _) = broadcast::channel(16);
        let stop = CancellationToken::new();
        let mut feed = feed(&bus, Framing::Sse, &stop);
        bus.send(event(7)).unwrap();
        let chunk = feed.next().await.unwrap();
        let text = std::str::from_utf8(&chunk).unwrap();
        let json = serde_json::to_string(&event(7)).unwrap();
        assert_eq!(text, format!("id: 7\ndata: {json}\n\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_stream_is_told_and_goes_on() {
        let (bus, _) = broadcast::channel(4);
        let stop = CancellationToken::new();
        let mut feed = feed(&bus, Framing::Ndjson, &stop);
        for seq in 1..=10 {
            bus.send(event(seq)).unwrap();
        }
        // 10 sent into a buffer of 4: 1..=6 are lost, 7 is the oldest kept.
        let got = parse_ndjson(&feed.next().await.unwrap());
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].kind, EventKind::Lagged { missed: 6 });
        assert_eq!(got[0].seq, 6, "the seq of the last event missed");
        assert_eq!(got[1], event(7));
        for seq in 8..=10 {
            assert_eq!(parse_ndjson(&feed.next().await.unwrap()), vec![event(seq)]);
        }
        bus.send(event(11)).unwrap();
        assert_eq!(parse_ndjson(&feed.next().await.unwrap()), vec![event(11)]);
    }

    #[tokio::test(start_paused = true)]
    async fn keepalives_only_when_nothing_happens() {
        let (bus, _) = broadcast::channel(16);
        let stop = CancellationToken::new();
        for (framing, want) in [(Framing::Ndjson, &b"\n"[..]), (Framing::Sse, b":\n\n")] {
            let mut feed = feed(&bus, framing, &stop);
            let started = Instant::now();
            assert_eq!(feed.next().await.unwrap(), want, "{framing:?}");
            assert_eq!(started.elapsed(), KEEPALIVE, "{framing:?}");
            // An event restarts the wait.
            tokio::time::advance(KEEPALIVE / 2).await;
            bus.send(event(1)).unwrap();
            feed.next().await.unwrap();
            let after_event = Instant::now();
            assert_eq!(feed.next().await.unwrap(), want, "{framing:?}");
            assert_eq!(after_event.elapsed(), KEEPALIVE, "{framing:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_ends_when_the_bus_is_gone() {
        let (bus, _) = broadcast::channel(16);
        let stop = CancellationToken::new();
        let feed = feed(&bus, Framing::Ndjson, &stop);
        drop(bus);
        let chunks: Vec<_> = feed.into_stream().collect().await;
        assert!(chunks.is_empty());
    }

    #[test]
    fn streams_are_capped_overall_and_per_uid_and_slots_come_back() {
        let streams = Arc::new(EventStreams::default());
        let mine: Vec<StreamSlot> = (0..MAX_EVENT_STREAMS_PER_UID)
            .map(|_| streams.open(Some(1000)).unwrap())
            .collect();
        let refused = streams.open(Some(1000)).err().unwrap();
        assert_eq!(refused.0.status, 503);
        assert_eq!(refused.0.kind, problem_type::OVERLOADED);
        assert!(refused.0.detail.unwrap().contains("uid 1000"));
        // Another uid still gets one; the first gets one again once one of its own is closed.
        let other = streams.open(Some(1001)).unwrap();
        drop(mine);
        let again = streams.open(Some(1000)).unwrap();
        drop((other, again));
        // The overall cap, over many uids.
        let many: Vec<StreamSlot> = (0..MAX_EVENT_STREAMS)
            .map(|i| streams.open(Some(u32::try_from(i).unwrap())).unwrap())
            .collect();
        assert!(streams.open(Some(5000)).is_err());
        drop(many);
        assert_eq!(streams.lock().total, 0);
        assert!(streams.lock().by_uid.is_empty());
    }

    #[test]
    fn sse_is_chosen_by_accept() {
        // (Accept, framing)
        let table = [
            (None, Framing::Ndjson),
            (Some("application/x-ndjson"), Framing::Ndjson),
            (Some("*/*"), Framing::Ndjson),
            (Some("text/event-stream"), Framing::Sse),
            (
                Some("application/json, Text/Event-Stream;q=0.9"),
                Framing::Sse,
            ),
        ];
        for (accept, want) in table {
            let mut headers = HeaderMap::new();
            if let Some(a) = accept {
                headers.insert(header::ACCEPT, HeaderValue::from_static(a));
            }
            assert_eq!(Framing::of(&headers), want, "{accept:?}");
        }
    }
}
