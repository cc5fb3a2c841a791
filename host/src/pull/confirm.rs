//! Acks and nacks on exactly-once subscriptions. There Pub/Sub guarantees no redelivery after an
//! ack only once it confirmed the ack, so (as Google's clients do) they go out as unary
//! `Acknowledge` / `ModifyAckDeadline` calls, not on the stream, and the answer is read: success
//! confirms; a failure names each refused ack id in the status's `google.rpc.ErrorInfo` metadata,
//! `TRANSIENT_…` (sent again, with backoff) or `PERMANENT_FAILURE_INVALID_ACK_ID` (the lease is
//! gone: Pub/Sub redelivers the message and dedup keeps its rows once).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as api;
use googleapis_tonic_google_rpc::google::rpc;
use prost::Message as _;
use tonic::transport::Channel;

use super::Target;

/// Why an ack (or nack) was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Worth sending again: a transient per-ack-id failure or a retryable gRPC code.
    #[error("transient: {0}")]
    Transient(String),
    /// Not: the ack id is no longer valid, or the call itself was refused.
    #[error("{0}")]
    Permanent(String),
}

/// Reads the outcome of an `Acknowledge` / `ModifyAckDeadline` call for `ack_id`.
pub fn classify(status: &tonic::Status, ack_id: &str) -> Refusal {
    let detail = rpc::Status::decode(status.details()).ok().and_then(|s| {
        s.details.iter().filter(|any| any.type_url.ends_with("google.rpc.ErrorInfo")).find_map(|any| {
            let info = rpc::ErrorInfo::decode(any.value.as_slice()).ok()?;
            info.metadata.get(ack_id).cloned()
        })
    });
    match detail {
        Some(code) if code.starts_with("TRANSIENT_") => Refusal::Transient(code),
        Some(code) => Refusal::Permanent(code),
        None => match status.code() {
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Internal
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Unknown => Refusal::Transient(format!("{}: {}", status.code(), status.message())),
            code => Refusal::Permanent(format!("{code}: {}", status.message())),
        },
    }
}

/// Sends one ack (`nack == false`) or nack and waits for Pub/Sub to confirm it, retrying transient
/// refusals for up to about a minute.
pub async fn send(
    client: &api::subscriber_client::SubscriberClient<Channel>,
    target: &Target,
    subscription: &str,
    ack_id: &str,
    nack: bool,
) -> Result<(), Refusal> {
    let attempt = || async {
        let mut client = client.clone();
        let params = format!("subscription={subscription}");
        let call = async {
            if nack {
                let mut request = tonic::Request::new(api::ModifyAckDeadlineRequest {
                    subscription: subscription.to_owned(),
                    ack_ids: vec![ack_id.to_owned()],
                    ack_deadline_seconds: 0,
                });
                prepare(&mut request, target, &params).await?;
                client.modify_ack_deadline(request).await.map(|_| ())
            } else {
                let mut request = tonic::Request::new(api::AcknowledgeRequest {
                    subscription: subscription.to_owned(),
                    ack_ids: vec![ack_id.to_owned()],
                });
                prepare(&mut request, target, &params).await?;
                client.acknowledge(request).await.map(|_| ())
            }
        };
        match tokio::time::timeout(Duration::from_secs(20), call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(classify(&status, ack_id)),
            Err(_) => Err(Refusal::Transient(String::from("no answer in 20 s"))),
        }
    };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(10)
                .with_jitter(),
        )
        .when(|e| matches!(e, Refusal::Transient(_)))
        .notify(|e, after| tracing::debug!(error = %e, ?after, "ack not confirmed yet; sending it again"))
        .await
}

async fn prepare<T>(request: &mut tonic::Request<T>, target: &Target, params: &str) -> Result<(), tonic::Status> {
    target.authorize(request).await.map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    let value = params.parse().map_err(|_| tonic::Status::invalid_argument("subscription name"))?;
    request.metadata_mut().insert("x-goog-request-params", value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with(code: tonic::Code, metadata: &[(&str, &str)]) -> tonic::Status {
        let info = rpc::ErrorInfo {
            reason: String::from("EXACTLY_ONCE_ACKID_FAILURE"),
            domain: String::from("pubsub.googleapis.com"),
            metadata: metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        let details = rpc::Status {
            code: code as i32,
            message: String::from("some acks failed"),
            details: vec![prost_types::Any {
                type_url: String::from("type.googleapis.com/google.rpc.ErrorInfo"),
                value: info.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(code, "some acks failed", details.encode_to_vec().into())
    }

    #[test]
    fn per_ack_id_failures_are_read_from_the_error_info() {
        let status = status_with(
            tonic::Code::InvalidArgument,
            &[("a", "PERMANENT_FAILURE_INVALID_ACK_ID"), ("b", "TRANSIENT_FAILURE_UNORDERED_ACK_ID")],
        );
        assert_eq!(classify(&status, "a"), Refusal::Permanent(String::from("PERMANENT_FAILURE_INVALID_ACK_ID")));
        assert_eq!(classify(&status, "b"), Refusal::Transient(String::from("TRANSIENT_FAILURE_UNORDERED_ACK_ID")));
    }

    #[test]
    fn without_error_info_the_grpc_code_decides() {
        assert!(matches!(classify(&tonic::Status::unavailable("down"), "a"), Refusal::Transient(_)));
        assert!(matches!(classify(&tonic::Status::deadline_exceeded("slow"), "a"), Refusal::Transient(_)));
        assert!(matches!(classify(&tonic::Status::permission_denied("no"), "a"), Refusal::Permanent(_)));
        // An ack id the metadata does not name falls back to the code too.
        let status = status_with(tonic::Code::Unavailable, &[("other", "PERMANENT_FAILURE_INVALID_ACK_ID")]);
        assert!(matches!(classify(&status, "a"), Refusal::Transient(_)));
    }
}
