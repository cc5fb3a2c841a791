//! Tokens for BigQuery, held by the host only: guests never see a credential.
//!
//! `application-default` follows Google's Application Default Credentials through `gcp_auth`
//! (service-account JSON in `GOOGLE_APPLICATION_CREDENTIALS`, gcloud user credentials, the metadata
//! server); tokens are cached and refreshed by it. `anonymous` sends no token (emulators).

use std::sync::Arc;

use super::config::Credentials;

use super::error::BigQueryError;

/// OAuth scope for tables, insertAll and the Storage Write API.
const SCOPES: &[&str] = &["https://www.googleapis.com/auth/bigquery"];

pub enum Auth {
    Anonymous,
    Google(Arc<dyn gcp_auth::TokenProvider>),
}

impl Auth {
    pub async fn new(credentials: Credentials) -> Result<Self, BigQueryError> {
        Ok(match credentials {
            Credentials::Anonymous => Self::Anonymous,
            Credentials::ApplicationDefault => Self::Google(gcp_auth::provider().await?),
        })
    }

    /// The `Authorization` header value, if any.
    pub async fn header(&self) -> Result<Option<String>, BigQueryError> {
        match self {
            Self::Anonymous => Ok(None),
            Self::Google(provider) => Ok(Some(format!("Bearer {}", provider.token(SCOPES).await?.as_str()))),
        }
    }
}
