//! Response bodies: empty, a short text, or a stream of pieces arriving from
//! a storage thread over a bounded channel.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use mft_storage::StoreError;
use tokio::sync::mpsc;

/// The body type of every response.
pub enum ResponseBody {
    /// A complete small body (possibly empty).
    Full(Option<Bytes>),
    /// File content streamed from storage.
    Stream {
        /// Pieces from the storage thread.
        rx: mpsc::Receiver<Result<Bytes, StoreError>>,
        /// Bytes still to come.
        left: u64,
        /// Reports the end of a logged download.
        report: Option<crate::audit::DownloadReport>,
    },
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let ResponseBody::Stream {
            left,
            report: Some(report),
            ..
        } = self
        {
            report.finish(*left);
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
            ResponseBody::Stream { rx, left, .. } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    *left = left.saturating_sub(data.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
                Poll::Ready(None) if *left > 0 => Poll::Ready(Some(Err(std::io::Error::other(
                    "storage stopped before the end of the file",
                )))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(data) => data.is_none(),
            ResponseBody::Stream { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResponseBody::Stream { left, .. } => SizeHint::with_exact(*left),
        }
    }
}
