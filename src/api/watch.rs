//! WatchPeerings: checks the request, authorizes it, takes a stream slot and starts a
//! watcher (`src/watch/`), then turns its events into responses and its end into an
//! [`ApiError`] (converted to a status once, in `rpc_span.rs`).
//!
//! A tenant's stream is filtered by the same rule as GetPeering (`Scope::read_peering`: the
//! peering touches one of its VPCs), a `vpc` must be one of its VPCs; the scope is the one
//! the stream was opened with (a policy reload applies to streams opened after it).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;

use super::authz::Scope;
use super::error::ApiError;
use super::{convert, input, PeeringApi};
use crate::proto::v1::watch_peerings_response::EventType;
use crate::proto::v1::{WatchPeeringsRequest, WatchPeeringsResponse};
use crate::watch::{
    EventKind, Listing, ResumeError, SlotRefused, Start, WatchEnd, WatchEvent, Watcher,
};

impl PeeringApi {
    pub(super) async fn watch(
        &self,
        scope: Scope,
        caller: &str,
        req: WatchPeeringsRequest,
    ) -> Result<WatchStream, ApiError> {
        input::watch(&req)?;
        let Some(hub) = &self.inner.watch else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "WatchPeerings was not given a change reader (PeeringApi::with_watch)"
            )));
        };
        if !req.vpc.is_empty() {
            scope.read_vpc(&req.vpc)?;
        }
        let slot = hub.stream_slot(caller).map_err(|refused| {
            ApiError::TooManyWatches(match refused {
                SlotRefused::Replica(n) => format!(
                    "{n} WatchPeerings streams are open on this replica (--watch-max-streams): \
                     retry later or on another replica"
                ),
                SlotRefused::Caller(n) => format!(
                    "{n} WatchPeerings streams of this caller are open on this replica \
                     (--watch-max-streams-per-caller): close one or retry later"
                ),
            })
        })?;
        let start = if req.resume_token.is_empty() {
            Start::Snapshot
        } else {
            match hub.resume_position(&req.resume_token).await {
                Ok(pos) => Start::After(pos),
                Err(ResumeError::Token(e)) => {
                    return Err(ApiError::invalid("resume_token", e.to_string()))
                }
                Err(ResumeError::End(e)) => return Err(e.into()),
            }
        };
        let vpc = (!req.vpc.is_empty()).then_some(req.vpc);
        // A tenant's initial list is read filtered by Postgres: other tenants' rows never
        // reach this process for its stream.
        let listing = Listing {
            vpc: vpc.clone(),
            patterns: scope.like_patterns(),
        };
        let wanted = vpc;
        let filter = Box::new(move |p: &crate::store::PeeringRecord| {
            wanted
                .as_deref()
                .is_none_or(|v| p.local_vpc == v || p.remote_vpc == v)
                && scope.read_peering(p).is_ok()
        });
        let Watcher { events, end } = hub.watch(start, filter, listing, slot);
        Ok(WatchStream {
            events,
            end,
            done: false,
        })
    }
}

/// A watcher's events as responses, then its end as the last item.
pub(super) struct WatchStream {
    events: mpsc::Receiver<WatchEvent>,
    end: oneshot::Receiver<WatchEnd>,
    done: bool,
}

impl Stream for WatchStream {
    type Item = Result<WatchPeeringsResponse, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.events.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(event)) => Poll::Ready(Some(Ok(response(event)))),
            Poll::Ready(None) => {
                self.done = true;
                // The watcher sends its end before it drops its sender.
                Poll::Ready(self.end.try_recv().ok().map(|e| Err(e.into())))
            }
        }
    }
}

fn response(e: WatchEvent) -> WatchPeeringsResponse {
    let kind = match e.kind {
        EventKind::Added => EventType::Added,
        EventKind::Modified => EventType::Modified,
        EventKind::Deleted => EventType::Deleted,
        EventKind::Synced => EventType::Synced,
        EventKind::Bookmark => EventType::Bookmark,
    };
    WatchPeeringsResponse {
        r#type: kind as i32,
        peering: e.change.as_deref().map(|c| convert::peering(&c.peering)),
        resume_token: e.resume_token,
    }
}

impl From<WatchEnd> for ApiError {
    fn from(e: WatchEnd) -> Self {
        match e {
            WatchEnd::OutOfRange => ApiError::ResumeTokenExpired(e.to_string()),
            WatchEnd::FellBehind(_) | WatchEnd::Stalled(_) => {
                ApiError::WatchFellBehind(e.to_string())
            }
            WatchEnd::Expired => ApiError::WatchExpired(e.to_string()),
            WatchEnd::ShuttingDown => ApiError::ShuttingDown(e.to_string()),
            WatchEnd::Store(e) => e.into(),
        }
    }
}
