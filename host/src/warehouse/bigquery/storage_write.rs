//! The Storage Write API (gRPC `google.cloud.bigquery.storage.v1.BigQueryWrite`), with the generated
//! client of `googleapis-tonic-google-cloud-bigquery-storage-v1` (tonic + prost, no protoc at build).
//!
//! - `default`: the table's `_default` stream, at-least-once. ≤ `append_max_bytes` per AppendRows
//!   request (the API's limit is 10 MB).
//! - `committed`: one COMMITTED stream per table, every append at an explicit offset, with the
//!   [`Ledger`] journaling each batch before its append: a retried or replayed append answered
//!   `ALREADY_EXISTS` is already in the table, and insert ids already written are skipped, so
//!   redelivered pushes never become duplicates.
//!
//! A request whose rows BigQuery refuses writes nothing; the refused rows are reported (dead-lettered
//! by the push handler) and the rest are appended again at the same offset.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use api::big_query_write_client::BigQueryWriteClient;
use googleapis_tonic_google_cloud_bigquery_storage_v1::google::cloud::bigquery::storage::v1 as api;
use prost_types::DescriptorProto;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::auth::Auth;
use super::config::{BigQueryConfig, WriteStream};
use super::encoder::RowEncoder;
use super::error::BigQueryError;
use super::ledger::{Journal, Ledger};
use super::rest::Field;
use super::retry::{self, Deadline};
use super::rows::Prepared;
use super::{Caps, TableReport, Telemetry, invalid};

/// A row ready to append: (index in the flush, insert id, serialized message).
type Encoded = (usize, String, Vec<u8>);

/// How one AppendRows request ended, apart from transport failures.
#[derive(Debug)]
enum Appended {
    Written,
    /// The offset is already in the stream: this very batch was written before.
    AlreadyThere,
    /// Nothing written; these request indices were refused.
    RowErrors(Vec<(usize, String)>),
    /// The stream no longer exists (expired, or the server forgot it).
    StreamGone(String),
}

pub struct StorageWrite {
    client: BigQueryWriteClient<Channel>,
    auth: Arc<Auth>,
    /// `projects/{p}/datasets/{d}`.
    parent: String,
    ledger: Option<Ledger>,
    max_bytes: usize,
    timeout: Duration,
    /// Per table, the encoder of its current schema (rebuilt only when the schema changes).
    encoders: HashMap<String, Arc<RowEncoder>>,
}

impl StorageWrite {
    pub fn connect(config: &BigQueryConfig, auth: Arc<Auth>, data_dir: &Path) -> Result<Self, BigQueryError> {
        let connect = |source| BigQueryError::Connect { endpoint: config.grpc_endpoint.clone(), source };
        let mut endpoint = Endpoint::from_shared(config.grpc_endpoint.clone())
            .map_err(connect)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if config.grpc_endpoint.starts_with("https://") {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_webpki_roots()).map_err(connect)?;
        }
        let client = BigQueryWriteClient::new(endpoint.connect_lazy())
            .max_encoding_message_size(16 << 20)
            .max_decoding_message_size(16 << 20);
        let retention = Duration::from_secs(config.ledger_retention_hours.saturating_mul(3600));
        let ledger = match config.write_stream {
            WriteStream::Committed => Some(Ledger::open(data_dir, retention)?),
            WriteStream::Default => None,
        };
        Ok(Self {
            client,
            auth,
            parent: format!("projects/{}/datasets/{}", config.project, config.dataset),
            ledger,
            max_bytes: config.append_max_bytes,
            timeout: config.request_timeout(),
            encoders: HashMap::new(),
        })
    }

    /// Logs how many insert ids the ledger keeps (called once at start; ids older than the retention
    /// are swept as batches are confirmed).
    pub fn prune(&self) -> Result<(), BigQueryError> {
        if let Some(ledger) = &self.ledger {
            tracing::info!(ids = ledger.written_ids()?, "exactly-once ledger: insert ids kept");
        }
        Ok(())
    }

    async fn request<T>(&self, message: T, stream: &str) -> Result<tonic::Request<T>, BigQueryError> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        let metadata = request.metadata_mut();
        // Google routes Storage Write calls by this header.
        let routing = format!("write_stream={}", stream.replace('/', "%2F"));
        if let Ok(v) = routing.parse() {
            metadata.insert("x-goog-request-params", v);
        }
        if let Some(header) = self.auth.header().await?
            && let Ok(v) = header.parse()
        {
            metadata.insert("authorization", v);
        }
        Ok(request)
    }

    async fn create_stream(&self, table: &str) -> Result<String, BigQueryError> {
        let parent = format!("{}/tables/{table}", self.parent);
        let message = api::CreateWriteStreamRequest {
            parent: parent.clone(),
            write_stream: Some(api::WriteStream {
                r#type: api::write_stream::Type::Committed as i32,
                ..Default::default()
            }),
        };
        let request = self.request(message, &parent).await?;
        let stream = self.client.clone().create_write_stream(request).await?.into_inner();
        tracing::info!(table, stream = %stream.name, "created COMMITTED write stream");
        Ok(stream.name)
    }

    async fn append(
        &self,
        stream: &str,
        offset: Option<i64>,
        descriptor: &DescriptorProto,
        rows: Vec<Vec<u8>>,
    ) -> Result<Appended, BigQueryError> {
        let message = api::AppendRowsRequest {
            write_stream: stream.to_owned(),
            offset,
            rows: Some(api::append_rows_request::Rows::ProtoRows(api::append_rows_request::ProtoData {
                writer_schema: Some(api::ProtoSchema { proto_descriptor: Some(descriptor.clone()) }),
                rows: Some(api::ProtoRows { serialized_rows: rows }),
            })),
            ..Default::default()
        };
        let request = self.request(tokio_stream::iter([message]), stream).await?;
        let response = match self.client.clone().append_rows(request).await {
            Ok(r) => r.into_inner().message().await,
            Err(status) => Err(status),
        };
        let response = match response {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(tonic::Status::unavailable("AppendRows closed without a response").into());
            }
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(Appended::AlreadyThere),
            Err(s) if s.code() == tonic::Code::NotFound || s.code() == tonic::Code::OutOfRange => {
                return Ok(Appended::StreamGone(s.message().to_owned()));
            }
            Err(s) => return Err(s.into()),
        };
        use api::append_rows_response::Response;
        match response.response {
            Some(Response::AppendResult(_)) => Ok(Appended::Written),
            Some(Response::Error(status)) => {
                let code = tonic::Code::from(status.code);
                if !response.row_errors.is_empty() {
                    return Ok(Appended::RowErrors(
                        response
                            .row_errors
                            .into_iter()
                            .map(|e| (usize::try_from(e.index).unwrap_or(usize::MAX), e.message))
                            .collect(),
                    ));
                }
                match code {
                    tonic::Code::AlreadyExists => Ok(Appended::AlreadyThere),
                    tonic::Code::NotFound => Ok(Appended::StreamGone(status.message)),
                    // The ledger is ahead of the stream: a correct server never gets here (an append
                    // confirmed as written is in the stream). Rather than stall this table for good,
                    // start over on a new stream; the error log is the trace of it.
                    tonic::Code::OutOfRange => {
                        tracing::error!(stream, offset, message = %status.message, "the write stream is behind the exactly-once ledger; moving to a new stream");
                        Ok(Appended::StreamGone(status.message))
                    }
                    tonic::Code::InvalidArgument if status.message.contains("Invalid stream name") => {
                        Ok(Appended::StreamGone(status.message))
                    }
                    _ => Err(tonic::Status::new(code, status.message).into()),
                }
            }
            None => Err(tonic::Status::unknown("AppendRows answered neither a result nor an error").into()),
        }
    }

    /// Writes one table's rows (already fitted to `fields`).
    pub async fn write(
        &mut self,
        table: &str,
        fields: &[Field],
        rows: Vec<Prepared>,
        deadline: Deadline,
        telemetry: &Telemetry,
    ) -> Result<TableReport, BigQueryError> {
        let encoder = match self.encoders.get(table) {
            Some(e) if e.fields() == fields => Arc::clone(e),
            _ => {
                let e = Arc::new(
                    RowEncoder::new(table, fields)
                        .map_err(|message| BigQueryError::Schema { table: table.into(), message })?,
                );
                self.encoders.insert(table.to_owned(), Arc::clone(&e));
                e
            }
        };
        let mut report = TableReport::default();
        let mut encoded: Vec<Encoded> = Vec::with_capacity(rows.len());
        for row in rows {
            match encoder.encode(&row.json) {
                Ok(bytes) => encoded.push((row.index, row.insert_id, bytes)),
                Err(e) => report.refused.push(invalid(row.index, e.location, e.message)),
            }
        }
        if self.ledger.is_some() {
            self.write_committed(table, &encoder, encoded, deadline, telemetry, &mut report).await?;
        } else {
            let stream = format!("{}/tables/{table}/streams/_default", self.parent);
            for (chunk, full) in chunks(encoded, self.max_bytes) {
                let mut pending = chunk;
                let mut first = true;
                while !pending.is_empty() {
                    let bytes: Vec<Vec<u8>> = pending.iter().map(|(_, _, b)| b.clone()).collect();
                    telemetry.request("write", bytes.len(), bytes.iter().map(Vec::len).sum(), first && full);
                    first = false;
                    let outcome = retry::until(
                        deadline,
                        || self.append(&stream, None, encoder.descriptor(), bytes.clone()),
                        |_| telemetry.retry("write"),
                    )
                    .await?;
                    match outcome {
                        Appended::Written | Appended::AlreadyThere => {
                            report.inserted += pending.len();
                            pending.clear();
                        }
                        Appended::RowErrors(errors) => pending = drop_refused(pending, &errors, &mut report),
                        Appended::StreamGone(m) => {
                            return Err(BigQueryError::Schema {
                                table: table.into(),
                                message: format!("_default stream: {m}"),
                            });
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    async fn write_committed(
        &mut self,
        table: &str,
        encoder: &RowEncoder,
        encoded: Vec<Encoded>,
        deadline: Deadline,
        telemetry: &Telemetry,
        report: &mut TableReport,
    ) -> Result<(), BigQueryError> {
        // A batch a previous flush (or a previous run) journaled but never saw confirmed goes first:
        // its offset comes before everything else.
        if let Some(journal) = self.ledger()?.journal(table)? {
            tracing::info!(table, offset = journal.offset, rows = journal.rows.len(), "finishing a journaled append");
            self.finish(table, journal, &HashMap::new(), deadline, telemetry, report).await?;
        }
        let mut unique = HashSet::with_capacity(encoded.len());
        let before = encoded.len();
        let encoded: Vec<_> = encoded.into_iter().filter(|(_, id, _)| unique.insert(id.clone())).collect();
        let written = self.ledger()?.already_written(table, encoded.iter().map(|(_, id, _)| id.as_str()))?;
        let fresh: Vec<_> = encoded.into_iter().filter(|(_, id, _)| !written.contains(id)).collect();
        report.duplicates += before - fresh.len();
        let owners: HashMap<String, usize> = fresh.iter().map(|(i, id, _)| (id.clone(), *i)).collect();
        for (chunk, full) in chunks(fresh, self.max_bytes) {
            let (stream, offset) = match self.ledger()?.stream(table)? {
                Some(s) => s,
                None => {
                    let name =
                        retry::until(deadline, || self.create_stream(table), |_| telemetry.retry("write")).await?;
                    self.ledger()?.set_stream(table, &name)?;
                    (name, 0)
                }
            };
            let journal = Journal {
                stream,
                offset,
                descriptor: encoder.descriptor().clone(),
                rows: chunk.into_iter().map(|(_, id, b)| (id, b)).collect(),
            };
            self.ledger()?.write_journal(table, &journal)?;
            telemetry.request("write", journal.rows.len(), journal.rows.iter().map(|(_, b)| b.len()).sum(), full);
            self.finish(table, journal, &owners, deadline, telemetry, report).await?;
        }
        Ok(())
    }

    /// Appends a journaled batch until BigQuery has it, then confirms it in the ledger.
    async fn finish(
        &mut self,
        table: &str,
        mut journal: Journal,
        owners: &HashMap<String, usize>,
        deadline: Deadline,
        telemetry: &Telemetry,
        report: &mut TableReport,
    ) -> Result<(), BigQueryError> {
        loop {
            if journal.rows.is_empty() {
                return self.ledger()?.clear_journal(table);
            }
            let bytes: Vec<Vec<u8>> = journal.rows.iter().map(|(_, b)| b.clone()).collect();
            let outcome = retry::until(
                deadline,
                || self.append(&journal.stream, Some(journal.offset), &journal.descriptor, bytes.clone()),
                |_| telemetry.retry("write"),
            )
            .await?;
            match outcome {
                Appended::Written | Appended::AlreadyThere => {
                    if matches!(outcome, Appended::AlreadyThere) {
                        tracing::info!(
                            table,
                            offset = journal.offset,
                            "append already in the stream (ALREADY_EXISTS): counted as written"
                        );
                    }
                    report.inserted += journal.rows.iter().filter(|(id, _)| owners.contains_key(id)).count();
                    return self.ledger()?.confirm(table, &journal);
                }
                Appended::RowErrors(errors) => {
                    let refused: HashSet<usize> = errors.iter().map(|(i, _)| *i).collect();
                    for (i, message) in errors {
                        let Some((id, _)) = journal.rows.get(i) else { continue };
                        match owners.get(id) {
                            Some(&index) => report.refused.push(invalid(index, None, message)),
                            None => {
                                tracing::warn!(table, insert_id = %id, %message, "a replayed row was refused; its redelivery will be dead-lettered")
                            }
                        }
                    }
                    journal.rows = journal
                        .rows
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !refused.contains(i))
                        .map(|(_, r)| r)
                        .collect();
                    self.ledger()?.write_journal(table, &journal)?;
                }
                Appended::StreamGone(message) => {
                    tracing::warn!(table, stream = %journal.stream, %message, "write stream is gone; starting a new one");
                    let name =
                        retry::until(deadline, || self.create_stream(table), |_| telemetry.retry("write")).await?;
                    self.ledger()?.set_stream(table, &name)?;
                    journal.stream = name;
                    journal.offset = 0;
                }
            }
        }
    }

    /// The ledger of the COMMITTED mode (only called on that path).
    fn ledger(&mut self) -> Result<&mut Ledger, BigQueryError> {
        self.ledger.as_mut().ok_or_else(|| BigQueryError::Local("no exactly-once ledger in default-stream mode".into()))
    }
}

/// Removes the rows BigQuery refused (reported) and returns the rest, to be appended again.
fn drop_refused(rows: Vec<Encoded>, errors: &[(usize, String)], report: &mut TableReport) -> Vec<Encoded> {
    let mut keep = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        match errors.iter().find(|(e, _)| *e == i) {
            Some((_, message)) => report.refused.push(invalid(row.0, None, message.clone())),
            None => keep.push(row),
        }
    }
    keep
}

/// Splits encoded rows into AppendRows requests under the byte cap (the API has no row cap); `true`
/// marks a full request.
fn chunks(rows: Vec<Encoded>, max_bytes: usize) -> Vec<(Vec<Encoded>, bool)> {
    // Each serialized row costs its bytes plus a few of framing.
    super::split(rows, Caps { max_rows: usize::MAX, max_bytes }, 0, |row| row.2.len() + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_cut_under_the_byte_cap() {
        let rows: Vec<Encoded> = (0..10).map(|i| (i, format!("id{i}"), vec![0; 96])).collect();
        let got = chunks(rows, 400);
        let shape: Vec<(usize, bool)> = got.iter().map(|(c, f)| (c.len(), *f)).collect();
        assert_eq!(shape, vec![(4, true), (4, true), (2, false)]);
    }

    #[test]
    fn refused_rows_are_reported_by_flush_index_and_the_rest_kept() {
        let rows = vec![(7, "a".into(), vec![1]), (9, "b".into(), vec![2]), (11, "c".into(), vec![3])];
        let mut report = TableReport::default();
        let kept = drop_refused(rows, &[(1, "bad b".into())], &mut report);
        assert_eq!(kept.iter().map(|r| r.0).collect::<Vec<_>>(), vec![7, 11]);
        assert_eq!(report.refused, vec![invalid(9, None, "bad b".into())]);
    }
}
