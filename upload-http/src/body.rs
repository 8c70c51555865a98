//! Response bodies: empty, a short text, or a file streamed from the store
//! one piece at a time, under the rate floor, holding its transfer permit
//! until it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use mft_storage::Download;

use crate::conn::RateFloor;

/// The body type of every response.
pub enum ResponseBody {
    /// A complete small body (possibly empty).
    Full(Option<Bytes>),
    /// File content streamed from storage.
    Stream {
        /// The file being read.
        download: Box<Download>,
        /// Reports the end of a logged download.
        report: Option<crate::audit::DownloadReport>,
        /// The slowest the client may take the file.
        floor: RateFloor,
        /// Bytes handed to hyper so far.
        sent: u64,
        /// The transfer's admission, released when the body ends.
        permit: Box<dyn Transfer>,
    },
}

/// The admitted transfer a streaming body belongs to: told when bytes
/// move (its stall clock), released when the body is dropped. Implemented
/// by the admission in `app.rs`, which this module does not import.
pub(crate) trait Transfer: Send + Sync {
    /// Bytes moved.
    fn progressed(&self);
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let ResponseBody::Stream {
            report: Some(report),
            sent,
            ..
        } = self
        {
            report.finish(*sent);
        }
    }
}

impl ResponseBody {
    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }

    /// A short text body.
    pub fn text(s: impl Into<String>) -> Self {
        ResponseBody::Full(Some(Bytes::from(s.into())))
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ResponseBody::Stream {
                download,
                floor,
                sent,
                permit,
                ..
            } => {
                if floor.is_below(*sent) {
                    tracing::info!(sent = *sent, "download stopped: client below http.min_rate");
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "client reads below http.min_rate",
                    ))));
                }
                match download.poll_next(cx) {
                    Poll::Ready(Some(Ok(data))) => {
                        *sent += data.len() as u64;
                        permit.progressed();
                        mft_metrics::metrics().add_sent(data.len() as u64);
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(data) => data.is_none(),
            ResponseBody::Stream { download, .. } => download.left() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResponseBody::Stream { download, .. } => SizeHint::with_exact(download.left()),
        }
    }
}
