//! Every way an HTTP request can fail, mapped to a status and a short
//! plain-text explanation in one place.

use http::StatusCode;
use mft_storage::db::DbError;
use mft_storage::StoreError;

use crate::token::TokenError;

/// A request that cannot be served, and why.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No such file or not one of our URLs.
    #[error("no such file")]
    NotFound,
    /// A method we do not serve.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// PUT without a token.
    #[error("missing upload token: send the Authorization header from the slot")]
    MissingToken,
    /// PUT with a bad or expired token, or one for another URL.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A recipient claim that is malformed, altered or for another file.
    #[error(transparent)]
    Claim(#[from] crate::claim::ClaimError),
    /// This service requires a recipient claim on downloads.
    #[error("this download link must come from a chat message (recipient claim required)")]
    ClaimRequired,
    /// The token is genuine but was issued for a different URL.
    #[error("upload token was issued for another file")]
    WrongSlot,
    /// No Content-Length on a PUT.
    #[error("Content-Length is required")]
    LengthRequired,
    /// Content-Length larger than the slot.
    #[error("Content-Length {got} exceeds the slot size {slot}")]
    TooLarge {
        /// Sent.
        got: u64,
        /// Allowed.
        slot: u64,
    },
    /// Other client mistakes: wrong length, wrong type, broken body.
    #[error("{0}")]
    BadRequest(String),
    /// The client stopped sending.
    #[error("request body timed out")]
    Timeout,
    /// The file was purged.
    #[error("this file has been removed")]
    Gone,
    /// A rescan found malware in the file (`mftd verify --rescan`): it is
    /// quarantined and never served again.
    #[error("refused: this file is quarantined: a malware scan found {0}; it is no longer served")]
    Quarantined(String),
    /// The slot was already used.
    #[error("this slot was already used; request a new one")]
    Conflict,
    /// Unsatisfiable Range.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// The file size, for Content-Range.
        size: u64,
    },
    /// A dependency is known to be down (checked before any work).
    #[error("storage temporarily unavailable, retry later")]
    Unavailable,
    /// The file store failed; the cause is kept for the log, the client
    /// sees only the status.
    #[error("file storage failed")]
    Store(#[source] StoreError),
    /// The file server (or local disk) ran out of space: nothing was stored.
    #[error("the file server is out of space: the upload was not stored; retry later")]
    NoSpace(#[source] StoreError),
    /// The transfer log could not read or commit; the transfer is refused.
    #[error("the transfer log is unavailable, retry later")]
    Log(#[source] DbError),
    /// `max_transfers` are in flight: retry shortly.
    #[error("too many transfers in flight, retry shortly")]
    Busy,
    /// The uploader's quota has no room left for this file.
    #[error("upload quota exceeded: {0}")]
    Quota(String),
    /// The transfer fell below the minimum rate (`http.min_rate`).
    #[error("transfer too slow (below http.min_rate)")]
    TooSlow,
    /// The malware scanner found a signature: nothing was published.
    #[error("refused: malware detected ({0})")]
    Infected(String),
    /// No scan verdict under `scan.fail = "closed"`: nothing was published.
    #[error("refused: the malware scanner is unavailable; retry later")]
    ScanUnavailable,
    /// Larger than the scanner takes (`scan.max_size`) under `above_max_size = "refuse"`.
    #[error("refused: files above {0} bytes cannot be scanned here")]
    ScanTooLarge(u64),
    /// The content type is refused (`limits.allowed_types`, `refused_types`).
    #[error("refused: {0}")]
    TypeRefused(String),
    /// Anything else on our side.
    #[error("internal error")]
    Internal,
}

impl HttpError {
    /// Whether the client should retry shortly (`Retry-After`).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self.status(),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE
        )
    }

    /// The status code to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::MissingToken => StatusCode::UNAUTHORIZED,
            HttpError::Token(_)
            | HttpError::WrongSlot
            | HttpError::Claim(_)
            | HttpError::ClaimRequired => StatusCode::FORBIDDEN,
            HttpError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            HttpError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Timeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::Conflict => StatusCode::CONFLICT,
            HttpError::Gone => StatusCode::GONE,
            HttpError::Quarantined(_) => StatusCode::FORBIDDEN,
            HttpError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            HttpError::Unavailable | HttpError::Busy | HttpError::Log(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            HttpError::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::Quota(_) => StatusCode::FORBIDDEN,
            HttpError::TooSlow => StatusCode::REQUEST_TIMEOUT,
            HttpError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::Infected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::ScanUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::ScanTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::TypeRefused(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// Whether the refusal uses up the slot (its attempt is on record and
    /// retrying the same bytes would be refused again).
    pub fn consumes_slot(&self) -> bool {
        matches!(self, HttpError::Infected(_) | HttpError::ScanTooLarge(_))
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => HttpError::NotFound,
            StoreError::AlreadyExists(_) => HttpError::Conflict,
            StoreError::ShortBody { expected, got } => {
                HttpError::BadRequest(format!("body ended after {got} of {expected} bytes"))
            }
            StoreError::LongBody { expected } => HttpError::TooLarge {
                got: expected + 1,
                slot: expected,
            },
            StoreError::Aborted => HttpError::BadRequest("upload aborted".into()),
            e @ StoreError::NoSpace { .. } => HttpError::NoSpace(e),
            e @ (StoreError::Unavailable { .. }
            | StoreError::Connect { .. }
            | StoreError::Io { .. }) => HttpError::Store(e),
        }
    }
}
