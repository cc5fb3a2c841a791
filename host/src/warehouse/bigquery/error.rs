//! What can go wrong talking to BigQuery, and which of it is worth a retry.

/// A BigQuery call that failed as a whole (per-row refusals are not errors: they are reported).
#[derive(Debug, thiserror::Error)]
pub enum BigQueryError {
    #[error("BigQuery HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("BigQuery answered {status} to {what}: {message}")]
    Api { what: String, status: u16, message: String },
    #[error("BigQuery Storage Write API: {0}")]
    Grpc(Box<tonic::Status>),
    #[error("connecting to the Storage Write API at {endpoint}: {source}")]
    Connect { endpoint: String, source: tonic::transport::Error },
    #[error("Google credentials (application default): {0}")]
    Auth(#[from] gcp_auth::Error),
    #[error("exactly-once ledger: {0}")]
    Ledger(#[from] duckdb::Error),
    #[error("table {table}: {message}")]
    Schema { table: String, message: String },
    /// A failure on this machine (runtime, ledger directory), not BigQuery's.
    #[error("{0}")]
    Local(String),
    #[error("BigQuery did not accept the rows within the retry deadline ({deadline_ms} ms); last error: {last}")]
    Deadline { deadline_ms: u64, last: String },
}

impl From<tonic::Status> for BigQueryError {
    fn from(status: tonic::Status) -> Self {
        Self::Grpc(Box::new(status))
    }
}

impl BigQueryError {
    /// Worth retrying: rate limits, server errors, timeouts and connection failures. Everything else
    /// (bad request, permission, missing table) will fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http(e) => e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() || e.is_decode(),
            Self::Api { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            Self::Grpc(s) => transient_code(s.code()),
            Self::Connect { .. } => true,
            Self::Auth(_) | Self::Ledger(_) | Self::Schema { .. } | Self::Local(_) | Self::Deadline { .. } => false,
        }
    }
}

/// gRPC codes Google documents as retryable for AppendRows.
pub fn transient_code(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unavailable | ResourceExhausted | Aborted | Internal | DeadlineExceeded | Cancelled | Unknown)
}
